// One fuzz entry point per reader: any bytes must give a value or an error,
// never a crash or an over-read. tests/data runs them over seeds and systematic
// mutations; data/fuzz/*_fuzzer.cc wrap them for libFuzzer (--config=fuzz):
//   bazel build --config=fuzz //data/fuzz:all && .../cifar_fuzzer corpus/
#pragma once

#include <cstddef>
#include <cstdint>

namespace quanta::data::fuzz {

int Cifar(const uint8_t* data, size_t size);  // both CIFAR layouts
int Idx(const uint8_t* data, size_t size);    // first half images, second half labels
int Image(const uint8_t* data, size_t size);  // PNG / JPEG / BMP via stb_image
int Tar(const uint8_t* data, size_t size);    // tar and gzip
int Lines(const uint8_t* data, size_t size);  // lines, label<TAB>text, the WordPiece tokenizer

}  // namespace quanta::data::fuzz
