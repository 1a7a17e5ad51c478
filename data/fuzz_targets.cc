// The readers' fuzz entry points (see data/fuzz_targets.h).
#include "data/fuzz_targets.h"

#include <string_view>

#include "data/archive.h"
#include "data/readers.h"
#include "data/wordpiece.h"

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
  absl::StatusOr<std::vector<LabeledText>> examples = ParseLabeledText(View(data, size), "fuzz");
  // The tokenizer takes any bytes too (invalid UTF-8 included).
  static const WordPieceTokenizer tokenizer =
      WordPieceTokenizer::FromVocab({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "##b", "!", "\xc3\xa9"});
  if (examples.ok()) {
    for (const LabeledText& e : *examples) (void)tokenizer.Encode(e.text, e.label, 16);
  }
  (void)tokenizer.Tokenize(View(data, size));
  return 0;
}

}  // namespace quanta::data::fuzz
