// Readers: round trips of tiny generated files in every format, the real
// Fashion-MNIST from Debian's package, and every kind of bad input.
#include "data/readers.h"

#include "core/ops.h"

#include "gtest/gtest.h"
#include "tests/data/test_files.h"

namespace quanta::data {
namespace {

using namespace testing;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

TEST(Readers, Cifar10And100RoundTrip) {
  std::string dir = TempDir() + "/cifar";
  for (int b = 1; b <= 5; ++b) WriteFile(dir + "/cifar-10-batches-bin/data_batch_" + std::to_string(b) + ".bin", CifarBytes(2, false, {b, 9}));
  WriteFile(dir + "/cifar-10-batches-bin/test_batch.bin", CifarBytes(3, false, {0, 1, 2}));
  auto train = ReadCifar(dir, CifarKind::k10, Split::kTrain);
  ASSERT_TRUE(train.ok()) << train.status();
  EXPECT_EQ((*train)->size(), 10);
  EXPECT_EQ((*train)->labels()[2], 2);  // batch 2, record 0
  Example e = (*train)->Get(1);
  EXPECT_EQ(e.image.shape(), (Shape{32, 32, 3}));
  // HWC from planar CHW: pixel p of channel c is (i * 7 + c * 3 + p) % 256 with i = 1.
  std::vector<uint8_t> px = e.image.Contiguous().ToVector<uint8_t>();
  EXPECT_EQ(px[0], 7);
  EXPECT_EQ(px[1], 10);       // channel 1 of pixel 0
  EXPECT_EQ(px[3 * 5 + 2], (7 + 6 + 5) % 256);
  WriteFile(dir + "/cifar-100-binary/train.bin", CifarBytes(2, true, {57, 99}));
  auto fine = ReadCifar(dir, CifarKind::k100, Split::kTrain);
  auto coarse = ReadCifar(dir, CifarKind::k100, Split::kTrain, CifarLabels::kCoarse);
  ASSERT_TRUE(fine.ok() && coarse.ok());
  EXPECT_EQ((*fine)->labels(), (std::vector<int64_t>{57, 99}));
  EXPECT_EQ((*coarse)->labels(), (std::vector<int64_t>{17, 19}));
  EXPECT_EQ((*fine)->num_classes(), 100);
}

TEST(Readers, CifarBadInput) {
  std::string dir = TempDir() + "/cifar-bad";
  auto missing = ReadCifar(dir, CifarKind::k100, Split::kTest);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Message(missing.status()), dir + "/cifar-100-binary/test.bin: no such file (EnsureCifar100 downloads it, or see its message)");
  std::string short_file = CifarBytes(2, false, {1, 2}).substr(0, 5000);
  EXPECT_EQ(Message(ParseCifar(short_file, CifarKind::k10, CifarLabels::kFine, "t.bin").status()),
            "t.bin: 5000 bytes is not a whole number of 3073-byte CIFAR-10 records");
  EXPECT_EQ(Message(ParseCifar(CifarBytes(2, false, {1, 12}), CifarKind::k10, CifarLabels::kFine, "t.bin").status()),
            "t.bin: record 1 has label 12, outside [0, 10)");
  EXPECT_EQ(Message(ParseCifar(CifarBytes(1, true, {100}), CifarKind::k100, CifarLabels::kFine, "c.bin").status()),
            "c.bin: record 0 has label 100, outside [0, 100)");
}

TEST(Readers, IdxPlainAndGzip) {
  std::string dir = TempDir() + "/idx";
  WriteFile(dir + "/img", IdxImages(3, 4, 5));
  WriteFile(dir + "/lbl", IdxLabels({3, 1, 4}));
  WriteFile(dir + "/img.gz", Gzip(IdxImages(3, 4, 5)));
  WriteFile(dir + "/lbl.gz", Gzip(IdxLabels({3, 1, 4})));
  auto plain = ReadIdx(dir + "/img", dir + "/lbl");
  auto gz = ReadIdx(dir + "/img.gz", dir + "/lbl.gz");
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_TRUE(gz.ok()) << gz.status();
  EXPECT_EQ((*plain)->images().shape(), (Shape{3, 4, 5, 1}));
  EXPECT_EQ((*gz)->labels(), (std::vector<int64_t>{3, 1, 4}));
  EXPECT_EQ((*gz)->images().ToVector<uint8_t>(), (*plain)->images().ToVector<uint8_t>());
  EXPECT_EQ((*plain)->images().ToVector<uint8_t>()[59], 59);
}

TEST(Readers, IdxBadInput) {
  std::string img = IdxImages(3, 4, 5), lbl = IdxLabels({3, 1, 4});
  auto error = [](std::string_view i, std::string_view l) { return Message(ParseIdx(i, l, 10, "f").status()); };
  EXPECT_EQ(error(std::string("\0\0\x08\x04", 4) + img.substr(4), lbl),
            "f: images file has magic number 0x00000804, expected 0x00000803 (u8, 3 dims)");
  EXPECT_EQ(error(img.substr(0, 40), lbl), "f: images file holds 24 data bytes but its header promises 60 (truncated)");
  EXPECT_EQ(error(img, IdxLabels({1, 2})), "f: 3 images but 2 labels");
  EXPECT_EQ(error(img, IdxLabels({1, 2, 10})), "f: label 10 of example 2 is outside [0, 10)");
  EXPECT_EQ(error("ab", lbl), "f: images file is 2 bytes, shorter than its header");
  // Found by libFuzzer in CI: 3 images of 7 x 0 pixels used to reach ImageDataset's check and throw.
  EXPECT_EQ(error(IdxImages(3, 7, 0), lbl), "f: images are 7 x 0 pixels (empty)");
  EXPECT_TRUE(ParseIdx(IdxImages(0, 7, 0), IdxLabels({}), 10, "f").ok());  // no images is an empty set, not an error
  std::string gz = Gzip(img);
  EXPECT_EQ(Message(Gunzip(gz.substr(0, gz.size() / 2), "x.gz").status()), "x.gz: truncated gzip data");
  std::string corrupt = gz;
  corrupt[12] ^= 0x55;
  EXPECT_NE(Message(Gunzip(corrupt, "x.gz").status()).find("x.gz: corrupt gzip data"), std::string::npos);
  EXPECT_EQ(ReadIdx(TempDir() + "/none", TempDir() + "/none2").status().code(), absl::StatusCode::kNotFound);
}

TEST(Readers, RealFashionMnistFromDebian) {
  auto test = ReadFashionMnist(Split::kTest);
  ASSERT_TRUE(test.ok()) << test.status();
  EXPECT_EQ((*test)->images().shape(), (Shape{10000, 28, 28, 1}));
  std::vector<int> counts(10, 0);
  for (int64_t l : (*test)->labels()) ++counts[l];
  EXPECT_EQ(counts, std::vector<int>(10, 1000));  // the test split is balanced
  EXPECT_EQ((*test)->class_names()[9], "Ankle boot");
  // The training split's pixel mean is the published 0.2860 (the normalization
  // of the fmnist_resnet8 model).
  auto train = ReadFashionMnist(Split::kTrain);
  ASSERT_TRUE(train.ok()) << train.status();
  EXPECT_EQ((*train)->size(), 60000);
  double mean = Mean((*train)->images().To(DType::kF64)).item<double>() / 255;
  EXPECT_NEAR(mean, 0.2860, 0.0005);
  auto missing = ReadFashionMnist(Split::kTrain, TempDir() + "/no-fmnist");
  EXPECT_NE(Message(missing.status()).find("dataset-fashion-mnist package"), std::string::npos);
}

TEST(Readers, ImageFolderDecodesAndResizes) {
  std::string root = TempDir() + "/folder";
  WriteFile(root + "/cat/a.png", Png(8, 6, 3, 1));
  WriteFile(root + "/cat/b.bmp", Bmp(5, 5, 2));
  WriteFile(root + "/dog/c.png", Png(4, 4, 4, 3));  // RGBA, converted to RGB
  WriteFile(root + "/dog/notes.txt", "not an image");
  auto d = ReadImageFolder(root, 4, 4);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ((*d)->size(), 3);
  EXPECT_EQ((*d)->labels(), (std::vector<int64_t>{0, 0, 1}));
  EXPECT_EQ((*d)->class_names(), (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ((*d)->images().shape(), (Shape{3, 4, 4, 3}));
  // An image already at the target size is decoded exactly: PNG is lossless.
  auto exact = DecodeImage(Png(4, 4, 3, 3), "p.png");
  ASSERT_TRUE(exact.ok());
  EXPECT_EQ(exact->ToVector<uint8_t>()[5], (5 * 13 + 3) % 256);
  WriteFile(root + "/dog/broken.png", Png(4, 4, 3, 0).substr(0, 30));
  auto broken = ReadImageFolder(root, 4, 4);
  EXPECT_FALSE(broken.ok());
  EXPECT_NE(Message(broken.status()).find("broken.png: "), std::string::npos) << broken.status();
  EXPECT_EQ(ReadImageFolder(root + "/none", 4, 4).status().code(), absl::StatusCode::kNotFound);
}

TEST(Readers, TextLines) {
  std::string path = TempDir() + "/lines.tsv";
  WriteFile(path, "1\tgreat movie\r\n0\tdull\n\nlast line without newline");
  auto lines = ReadLines(path);
  ASSERT_TRUE(lines.ok());
  EXPECT_EQ(*lines, (std::vector<std::string>{"1\tgreat movie", "0\tdull", "", "last line without newline"}));
  EXPECT_EQ(Message(ParseLines(std::string("a\nb\0c", 5), "bin").status()), "bin: line 2 holds a NUL byte: not a text file");
}

TEST(Readers, LabeledText) {
  std::string path = TempDir() + "/train.tsv";
  WriteFile(path, "positive\tgreat movie\r\n\n 0 \t  dull\tand long \nneg\t\xc3\xa9t\xc3\xa9");
  auto examples = ReadLabeledText(path);
  ASSERT_TRUE(examples.ok()) << examples.status();
  ASSERT_EQ(examples->size(), 3u);
  EXPECT_EQ((*examples)[0].label, "positive");
  EXPECT_EQ((*examples)[0].text, "great movie");
  EXPECT_EQ((*examples)[1].label, "0");
  EXPECT_EQ((*examples)[1].text, "dull\tand long");  // only the first tab splits
  EXPECT_EQ((*examples)[2].text, "\xc3\xa9t\xc3\xa9");
  EXPECT_EQ((*examples)[2].line, 4);
  EXPECT_EQ(Message(ParseLabeledText("1\tok\nno tab here\n", "a.tsv").status()),
            "a.tsv: line 2 has no tab: expected label<TAB>text");
  EXPECT_EQ(Message(ParseLabeledText("\tok\n", "b.tsv").status()), "b.tsv: line 1 has an empty label");
  EXPECT_EQ(Message(ParseLabeledText("1\tok\n\n2\t \n", "c.tsv").status()), "c.tsv: line 3 has an empty text");
  EXPECT_EQ(Message(ParseLabeledText("\n\n", "d.tsv").status()),
            "d.tsv: holds no example (expected label<TAB>text lines)");
  EXPECT_EQ(ReadLabeledText(TempDir() + "/missing.tsv").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace quanta::data
