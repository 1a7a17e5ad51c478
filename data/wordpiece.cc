// WordPiece: UTF-8 decoding, the basic tokenizer's character classes, the
// greedy longest-match split, and encoding with special tokens.
#include "data/wordpiece.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/utf8.h"

namespace quanta::data {
namespace {

// Decodes UTF-8; a malformed byte becomes U+FFFD (dropped later, as BERT does).
std::vector<char32_t> Decode(std::string_view s) {
  std::vector<char32_t> out;
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    char32_t cp = n == 1 ? c : (c & (0xFF >> (n + 1)));
    bool ok = true;
    for (int k = 1; k < n; ++k) {
      auto d = static_cast<unsigned char>(s[i + k]);
      ok = ok && (d >> 6) == 2;
      cp = (cp << 6) | (d & 0x3F);
    }
    out.push_back(ok ? cp : 0xFFFD);
    i += ok ? n : 1;
  }
  return out;
}

bool IsWhitespace(char32_t c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}
bool IsControl(char32_t c) {
  if (c == '\t' || c == '\n' || c == '\r') return false;
  return c < 0x20 || (c >= 0x7F && c < 0xA0) || c == 0xAD || (c >= 0x200B && c <= 0x200F) || c == 0xFEFF;
}
// BERT's punctuation: every non-alphanumeric ASCII symbol, and Unicode's P*
// blocks that text commonly holds.
bool IsPunctuation(char32_t c) {
  if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126)) return true;
  return c == 0xA1 || c == 0xA7 || c == 0xAB || c == 0xB6 || c == 0xB7 || c == 0xBB || c == 0xBF ||
         (c >= 0x2010 && c <= 0x2027) || (c >= 0x2030 && c <= 0x205E) || (c >= 0x3001 && c <= 0x3003) ||
         (c >= 0x3008 && c <= 0x3011) || (c >= 0xFF01 && c <= 0xFF0F) || c == 0xFF1A || c == 0xFF1B ||
         c == 0xFF1F || c == 0x055E || c == 0x0589 || c == 0x061F || c == 0x0964;
}
bool IsCjk(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
         (c >= 0x2A700 && c <= 0x2CEAF) || (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

// Note [Accents]: lower casing strips accents by NFD decomposition in BERT. The
// table below is that decomposition's base letter for Latin-1 Supplement and
// Latin Extended-A, the combining marks (U+0300-U+036F) are dropped, and Greek
// and Cyrillic capitals lower-case; other scripts pass through unchanged.
char32_t LowerStrip(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  // U+00C0..U+017F lower-cased and decomposed to the base letter (generated
  // with Python's unicodedata: NFD of lower(), combining marks removed).
  static const char16_t kLatin[] = {
      0x061, 0x061, 0x061, 0x061, 0x061, 0x061, 0x0E6, 0x063, 0x065, 0x065, 0x065, 0x065,
      0x069, 0x069, 0x069, 0x069, 0x0F0, 0x06E, 0x06F, 0x06F, 0x06F, 0x06F, 0x06F, 0x0D7,
      0x0F8, 0x075, 0x075, 0x075, 0x075, 0x079, 0x0FE, 0x0DF, 0x061, 0x061, 0x061, 0x061,
      0x061, 0x061, 0x0E6, 0x063, 0x065, 0x065, 0x065, 0x065, 0x069, 0x069, 0x069, 0x069,
      0x0F0, 0x06E, 0x06F, 0x06F, 0x06F, 0x06F, 0x06F, 0x0F7, 0x0F8, 0x075, 0x075, 0x075,
      0x075, 0x079, 0x0FE, 0x079, 0x061, 0x061, 0x061, 0x061, 0x061, 0x061, 0x063, 0x063,
      0x063, 0x063, 0x063, 0x063, 0x063, 0x063, 0x064, 0x064, 0x111, 0x111, 0x065, 0x065,
      0x065, 0x065, 0x065, 0x065, 0x065, 0x065, 0x065, 0x065, 0x067, 0x067, 0x067, 0x067,
      0x067, 0x067, 0x067, 0x067, 0x068, 0x068, 0x127, 0x127, 0x069, 0x069, 0x069, 0x069,
      0x069, 0x069, 0x069, 0x069, 0x069, 0x131, 0x133, 0x133, 0x06A, 0x06A, 0x06B, 0x06B,
      0x138, 0x06C, 0x06C, 0x06C, 0x06C, 0x06C, 0x06C, 0x140, 0x140, 0x142, 0x142, 0x06E,
      0x06E, 0x06E, 0x06E, 0x06E, 0x06E, 0x149, 0x14B, 0x14B, 0x06F, 0x06F, 0x06F, 0x06F,
      0x06F, 0x06F, 0x153, 0x153, 0x072, 0x072, 0x072, 0x072, 0x072, 0x072, 0x073, 0x073,
      0x073, 0x073, 0x073, 0x073, 0x073, 0x073, 0x074, 0x074, 0x074, 0x074, 0x167, 0x167,
      0x075, 0x075, 0x075, 0x075, 0x075, 0x075, 0x075, 0x075, 0x075, 0x075, 0x075, 0x075,
      0x077, 0x077, 0x079, 0x079, 0x079, 0x07A, 0x07A, 0x07A, 0x07A, 0x07A, 0x07A, 0x17F,

  };
  if (c >= 0xC0 && c < 0x180) return kLatin[c - 0xC0];
  if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 32;  // Greek capitals
  if (c >= 0x410 && c <= 0x42F) return c + 32;                 // Cyrillic capitals
  if (c >= 0x400 && c <= 0x40F) return c + 80;
  return c;
}

}  // namespace

std::string WordPieceTokenizer::Check(std::vector<std::string>& vocab, WordPieceTokenizer* out) {
  out->vocab_ = std::move(vocab);
  out->ids_.clear();
  for (size_t i = 0; i < out->vocab_.size(); ++i) {
    if (!out->ids_.emplace(out->vocab_[i], static_cast<int64_t>(i)).second) {
      return absl::StrCat("token '", out->vocab_[i], "' repeats (line ", i + 1, ")");
    }
  }
  for (auto [name, slot] : {std::pair{"[UNK]", &out->unk_}, {"[CLS]", &out->cls_}, {"[SEP]", &out->sep_},
                            {"[PAD]", &out->pad_}}) {
    auto it = out->ids_.find(name);
    if (it == out->ids_.end()) return absl::StrCat("the vocabulary has no ", name, " token");
    *slot = it->second;
  }
  return "";
}

absl::StatusOr<WordPieceTokenizer> WordPieceTokenizer::Load(const std::string& vocab_path, bool lower_case) {
  std::ifstream f(vocab_path);
  if (!f) return absl::NotFoundError("wordpiece: cannot open vocabulary " + vocab_path);
  std::vector<std::string> vocab;
  for (std::string line; std::getline(f, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    vocab.push_back(line);
  }
  if (vocab.empty()) return absl::InvalidArgumentError("wordpiece: " + vocab_path + " is empty");
  WordPieceTokenizer t;
  t.lower_case_ = lower_case;
  std::string err = Check(vocab, &t);
  if (!err.empty()) return absl::InvalidArgumentError("wordpiece: " + vocab_path + ": " + err);
  return t;
}

WordPieceTokenizer WordPieceTokenizer::FromVocab(std::vector<std::string> vocab, bool lower_case) {
  WordPieceTokenizer t;
  t.lower_case_ = lower_case;
  std::string err = Check(vocab, &t);
  QUANTA_CHECK(err.empty(), "wordpiece: ", err);
  return t;
}

std::vector<std::string> WordPieceTokenizer::BasicTokenize(std::string_view text) const {
  std::vector<std::string> words;
  std::string cur;
  auto flush = [&] {
    if (!cur.empty()) words.push_back(std::move(cur));
    cur.clear();
  };
  for (char32_t c : Decode(text)) {
    if (c == 0 || c == 0xFFFD || IsControl(c)) continue;
    if (IsWhitespace(c)) {
      flush();
      continue;
    }
    if (lower_case_) {
      if (c >= 0x300 && c <= 0x36F) continue;  // combining marks (Note [Accents])
      c = LowerStrip(c);
    }
    if (IsPunctuation(c) || IsCjk(c)) {
      flush();
      AppendUtf8(c, &cur);
      flush();
      continue;
    }
    AppendUtf8(c, &cur);
  }
  flush();
  return words;
}

std::vector<std::string> WordPieceTokenizer::Tokenize(std::string_view text) const {
  constexpr size_t kMaxWordChars = 100;  // longer words are [UNK], as in BERT
  std::vector<std::string> pieces;
  for (const std::string& word : BasicTokenize(text)) {
    if (Decode(word).size() > kMaxWordChars) {
      pieces.push_back(vocab_[unk_]);
      continue;
    }
    std::vector<std::string> split;
    size_t start = 0;
    bool bad = false;
    while (start < word.size()) {
      size_t end = word.size();
      std::string found;
      while (end > start) {
        // Only cut at UTF-8 character boundaries.
        if (end < word.size() && (static_cast<unsigned char>(word[end]) >> 6) == 2) {
          --end;
          continue;
        }
        std::string piece = (start > 0 ? "##" : "") + word.substr(start, end - start);
        if (ids_.count(piece)) {
          found = std::move(piece);
          break;
        }
        --end;
      }
      if (found.empty()) {
        bad = true;
        break;
      }
      split.push_back(std::move(found));
      start = end;
    }
    if (bad) {
      pieces.push_back(vocab_[unk_]);
    } else {
      pieces.insert(pieces.end(), split.begin(), split.end());
    }
  }
  return pieces;
}

std::vector<int64_t> WordPieceTokenizer::Ids(std::string_view text) const {
  std::vector<int64_t> ids;
  for (const std::string& p : Tokenize(text)) ids.push_back(Id(p));
  return ids;
}

Encoding WordPieceTokenizer::Encode(std::string_view a, std::string_view b, int64_t max_length, bool pad) const {
  bool pair = !b.empty();
  QUANTA_CHECK(max_length >= (pair ? 3 : 2), "wordpiece: max_length ", max_length, " leaves no room for the tokens");
  std::vector<int64_t> ta = Ids(a), tb = pair ? Ids(b) : std::vector<int64_t>{};
  size_t budget = static_cast<size_t>(max_length) - (pair ? 3 : 2);
  while (ta.size() + tb.size() > budget) {  // longest first, as BERT truncates
    (ta.size() >= tb.size() ? ta : tb).pop_back();
  }
  Encoding e;
  auto push = [&](int64_t id, int64_t type) {
    e.ids.push_back(id);
    e.type_ids.push_back(type);
    e.attention_mask.push_back(1);
  };
  push(cls_, 0);
  for (int64_t id : ta) push(id, 0);
  push(sep_, 0);
  if (pair) {
    for (int64_t id : tb) push(id, 1);
    push(sep_, 1);
  }
  while (pad && static_cast<int64_t>(e.ids.size()) < max_length) {
    e.ids.push_back(pad_);
    e.type_ids.push_back(0);
    e.attention_mask.push_back(0);
  }
  return e;
}

BatchEncoding WordPieceTokenizer::EncodeBatch(const std::vector<std::string>& texts, int64_t max_length) const {
  std::vector<int64_t> ids, types, mask;
  for (const std::string& t : texts) {
    Encoding e = Encode(t, {}, max_length, true);
    ids.insert(ids.end(), e.ids.begin(), e.ids.end());
    types.insert(types.end(), e.type_ids.begin(), e.type_ids.end());
    mask.insert(mask.end(), e.attention_mask.begin(), e.attention_mask.end());
  }
  Shape shape = {static_cast<int64_t>(texts.size()), max_length};
  return {Tensor::FromVector<int64_t>(ids, shape), Tensor::FromVector<int64_t>(types, shape),
          Tensor::FromVector<int64_t>(mask, shape)};
}

int64_t WordPieceTokenizer::Id(const std::string& token) const {
  auto it = ids_.find(token);
  return it == ids_.end() ? unk_ : it->second;
}

const std::string& WordPieceTokenizer::Token(int64_t id) const {
  QUANTA_CHECK(id >= 0 && id < size(), "wordpiece: id ", id, " outside the vocabulary of ", size());
  return vocab_[id];
}

}  // namespace quanta::data
