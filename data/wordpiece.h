// BERT's WordPiece tokenizer, as Hugging Face's BertTokenizer: basic
// tokenization (control characters dropped, whitespace split, optional lower
// casing with accent stripping, punctuation and CJK characters split off), then
// greedy longest-match-first word pieces with "##" continuations, [UNK] for a
// word with no split; encoding adds [CLS]/[SEP], segment ids, truncation
// (longest first) and [PAD] with an attention mask. Not here: Unicode
// normalization beyond the Latin, Greek and Cyrillic letters (Note [Accents]).
//
//   auto tok = WordPieceTokenizer::Load("vocab.txt", /*lower_case=*/true);
//   std::vector<std::string> pieces = tok->Tokenize("Unaffable!");  // un ##aff ##able !
//   Encoding e = tok->Encode("how are you", "fine", /*max_length=*/16);
//   // e.ids: [CLS] how are you [SEP] fine [SEP] [PAD]...; e.type_ids 0..0 1 1 0..
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "core/tensor.h"

namespace quanta::data {

struct Encoding {
  std::vector<int64_t> ids, type_ids, attention_mask;  // max_length each when padded
};
// A batch as i64 (B, T) tensors, T = max_length.
struct BatchEncoding {
  Tensor ids, type_ids, attention_mask;
};

class WordPieceTokenizer {
 public:
  // One token a line; errors name the file and line (empty file, duplicate
  // token, a special token missing).
  static absl::StatusOr<WordPieceTokenizer> Load(const std::string& vocab_path, bool lower_case = true);
  // Throws quanta::Error when a special token is missing or a token repeats.
  static WordPieceTokenizer FromVocab(std::vector<std::string> vocab, bool lower_case = true);

  // Basic tokenization alone: words and punctuation.
  std::vector<std::string> BasicTokenize(std::string_view text) const;
  // Word pieces of text.
  std::vector<std::string> Tokenize(std::string_view text) const;
  // [CLS] a [SEP] (b [SEP]) within max_length, padded to it when pad.
  Encoding Encode(std::string_view a, std::string_view b = {}, int64_t max_length = 128, bool pad = true) const;
  BatchEncoding EncodeBatch(const std::vector<std::string>& texts, int64_t max_length) const;

  int64_t Id(const std::string& token) const;  // [UNK]'s id when absent
  const std::string& Token(int64_t id) const;
  int64_t size() const { return static_cast<int64_t>(vocab_.size()); }
  int64_t pad_id() const { return pad_; }
  bool lower_case() const { return lower_case_; }

 private:
  WordPieceTokenizer() = default;
  static std::string Check(std::vector<std::string>& vocab, WordPieceTokenizer* out);
  std::vector<int64_t> Ids(std::string_view text) const;

  std::vector<std::string> vocab_;
  std::unordered_map<std::string, int64_t> ids_;
  bool lower_case_ = true;
  int64_t unk_ = 0, cls_ = 0, sep_ = 0, pad_ = 0;
};

}  // namespace quanta::data
