#!/usr/bin/env python3
"""Writes tests/data/testdata/fuzz_seeds/<target>/: small valid inputs for each
reader's libFuzzer target (data/fuzz/*_fuzzer), the corpus .ci/run starts the
fuzzers from. CI reads the committed files; it never runs this script.
Regenerate with: python3 tools/gen_fuzz_seeds.py
"""
import gzip
import io
import os
import struct
import tarfile
import zlib

root = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "testdata", "fuzz_seeds")


def write(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# CIFAR: two CIFAR-10 records (label, 3072 pixel bytes) and two CIFAR-100 ones
# (coarse, fine, 3072 bytes).
pixels = bytes((i * 7) % 256 for i in range(3072))
write("cifar", "cifar10_two.bin", bytes([3]) + pixels + bytes([9]) + pixels)
write("cifar", "cifar100_two.bin", bytes([1, 42]) + pixels + bytes([19, 99]) + pixels)

# IDX: the target reads the first half as images, the second as labels.
images = struct.pack(">IIII", 0x803, 2, 2, 2) + bytes([0, 64, 128, 255, 1, 2, 3, 4])
labels = struct.pack(">II", 0x801, 2) + bytes([7, 3]) + bytes(14)  # padded to the images' length
write("idx", "two_images.idx", images + labels)


# Images: a 2x2 RGB PNG, a 2x2 8-bit gray PNG, a 2x1 24-bit BMP.
def png(width, height, color_type, channels, rows):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(r) for r in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


write("image", "rgb_2x2.png", png(2, 2, 2, 3, [[255, 0, 0, 0, 255, 0], [0, 0, 255, 255, 255, 255]]))
write("image", "gray_2x2.png", png(2, 2, 0, 1, [[0, 128], [200, 255]]))
bmp_pixels = bytes([0, 0, 255, 0, 255, 0]) + bytes(2)  # one row of two BGR pixels, padded to 4 bytes
bmp = b"BM" + struct.pack("<IHHI", 54 + len(bmp_pixels), 0, 0, 54)
bmp += struct.pack("<IiiHHIIiiII", 40, 2, 1, 1, 24, 0, len(bmp_pixels), 2835, 2835, 0, 0) + bmp_pixels
write("image", "bgr_2x1.bmp", bmp)

# Lines: label<TAB>text, as the text reader and the tokenizer take them.
write("lines", "labeled.tsv", b"0\thello world\n1\tthe quick brown fox\n0\tunaffable jumped\n")

# Tar: one folder and one file, plain and gzipped.
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
    info = tarfile.TarInfo("d")
    info.type = tarfile.DIRTYPE
    t.addfile(info)
    body = b"hello tar\n"
    info = tarfile.TarInfo("d/a.txt")
    info.size = len(body)
    t.addfile(info, io.BytesIO(body))
write("tar", "one_file.tar", buf.getvalue())
write("tar", "one_file.tar.gz", gzip.compress(buf.getvalue(), mtime=0))
