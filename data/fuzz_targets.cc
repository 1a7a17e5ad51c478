// The readers' fuzz entry points (see data/fuzz_targets.h).
#include "data/fuzz_targets.h"

#include <string_view>

#include "data/archive.h"
#include "data/readers.h"

namespace quanta::data::fuzz {
namespace {
std::string_view View(const uint8_t* data, size_t size) { return {reinterpret_cast<const char*>(data), size}; }
}  // namespace

int Cifar(const uint8_t* data, size_t size) {
  (void)ParseCifar(View(data, size), CifarKind::k10, CifarLabels::kFine, "fuzz");
  (void)ParseCifar(View(data, size), CifarKind::k100, CifarLabels::kCoarse, "fuzz");
  return 0;
}

int Idx(const uint8_t* data, size_t size) {
  std::string_view all = View(data, size);
  (void)ParseIdx(all.substr(0, size / 2), all.substr(size / 2), 10, "fuzz");
  return 0;
}

int Image(const uint8_t* data, size_t size) {
  (void)DecodeImage(View(data, size), "fuzz", 3);
  return 0;
}

int Tar(const uint8_t* data, size_t size) {
  (void)ParseTar(View(data, size), "fuzz");
  (void)Gunzip(View(data, size), "fuzz", size_t{64} << 20);
  return 0;
}

int Lines(const uint8_t* data, size_t size) {
  (void)ParseLines(View(data, size), "fuzz");
  return 0;
}

}  // namespace quanta::data::fuzz
