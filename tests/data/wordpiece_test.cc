// WordPiece tokenizer: hand-worked cases against what Hugging Face's
// BertTokenizer gives for the same small vocabulary (punctuation, accents,
// unicode, unknown and over-long words, truncation, padding), and bad files.
#include "data/wordpiece.h"

#include <cstdio>
#include <fstream>
#include <set>

#include "core/error.h"
#include "data/synthetic.h"
#include "gtest/gtest.h"

namespace quanta::data {
namespace {

using Strings = std::vector<std::string>;

WordPieceTokenizer Small(bool lower = true) {
  return WordPieceTokenizer::FromVocab({"[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "!", ",", "?",
                                        "hello", "world", "café", "cafe", "naive", "##s", "want", "##ed", "to",
                                        "我", "们", "'", "s", "Hello", "-", "state", "of", "art", "¿", "que", "tal"},
                                       lower);
}

TEST(WordPiece, SplitsWordsIntoLongestPieces) {
  WordPieceTokenizer t = Small();
  EXPECT_EQ(t.Tokenize("unaffable"), (Strings{"un", "##aff", "##able"}));
  EXPECT_EQ(t.Tokenize("UNwanted, running"), (Strings{"[UNK]", ",", "[UNK]"}));  // no split: [UNK] for the word
  EXPECT_EQ(t.Tokenize("wanted"), (Strings{"want", "##ed"}));
  EXPECT_EQ(t.Tokenize("hellos"), (Strings{"hello", "##s"}));
}

TEST(WordPiece, BasicTokenizationPunctuationAccentsUnicode) {
  WordPieceTokenizer t = Small();
  EXPECT_EQ(t.BasicTokenize("  Hello,world!? \t\n"), (Strings{"hello", ",", "world", "!", "?"}));
  EXPECT_EQ(t.BasicTokenize("state-of-the-art"), (Strings{"state", "-", "of", "-", "the", "-", "art"}));
  EXPECT_EQ(t.BasicTokenize("world's"), (Strings{"world", "'", "s"}));
  // Lower casing strips accents (precomposed and combining), as BERT-uncased.
  EXPECT_EQ(t.BasicTokenize("Café NAÏVE Cafe\xCC\x81"), (Strings{"cafe", "naive", "cafe"}));
  EXPECT_EQ(t.BasicTokenize("ŁÓDŹ Straße"), (Strings{"łodz", "straße"}));
  EXPECT_EQ(t.BasicTokenize("ΑΒΓ Привет"), (Strings{"αβγ", "привет"}));
  // CJK characters stand alone; inverted question marks are punctuation.
  EXPECT_EQ(t.BasicTokenize("我们hello"), (Strings{"我", "们", "hello"}));
  EXPECT_EQ(t.Tokenize("¿Que tal?"), (Strings{"¿", "que", "tal", "?"}));
  // Control characters and malformed UTF-8 vanish; NBSP separates.
  EXPECT_EQ(t.BasicTokenize("hel\x01lo\xC2\xA0world\xff"), (Strings{"hello", "world"}));
  // Cased: no lower casing, accents kept.
  WordPieceTokenizer cased = Small(false);
  EXPECT_EQ(cased.Tokenize("Hello café"), (Strings{"Hello", "café"}));
  EXPECT_EQ(cased.Tokenize("HELLO"), (Strings{"[UNK]"}));
}

TEST(WordPiece, OverlongWordsAreUnknown) {
  WordPieceTokenizer t = Small();
  EXPECT_EQ(t.Tokenize(std::string(101, 'a')), (Strings{"[UNK]"}));
}

TEST(WordPiece, EncodesPairsWithTruncationAndPadding) {
  WordPieceTokenizer t = Small();
  Encoding e = t.Encode("hello world", "unaffable", 10);
  // [CLS] hello world [SEP] un ##aff ##able [SEP] [PAD] [PAD]
  EXPECT_EQ(e.ids, (std::vector<int64_t>{2, 10, 11, 3, 4, 5, 6, 3, 0, 0}));
  EXPECT_EQ(e.type_ids, (std::vector<int64_t>{0, 0, 0, 0, 1, 1, 1, 1, 0, 0}));
  EXPECT_EQ(e.attention_mask, (std::vector<int64_t>{1, 1, 1, 1, 1, 1, 1, 1, 0, 0}));
  // Longest first: the 3-piece second text loses pieces before the first.
  Encoding cut = t.Encode("hello world", "unaffable", 7);
  EXPECT_EQ(cut.ids, (std::vector<int64_t>{2, 10, 11, 3, 4, 5, 3}));
  Encoding single = t.Encode("hello hello hello", {}, 4, /*pad=*/false);
  EXPECT_EQ(single.ids, (std::vector<int64_t>{2, 10, 10, 3}));
  EXPECT_THROW(t.Encode("a", "b", 2), Error);
}

TEST(WordPiece, VocabularyErrorsNameTheProblem) {
  std::string path = ::testing::TempDir() + "/vocab.txt";
  { std::ofstream(path) << "[PAD]\n[UNK]\n[CLS]\nhello\n"; }
  auto missing = WordPieceTokenizer::Load(path);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(std::string(missing.status().message()).find("no [SEP]"), std::string::npos) << missing.status();
  { std::ofstream(path) << "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\nhello\n"; }
  auto dup = WordPieceTokenizer::Load(path);
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(std::string(dup.status().message()).find("'hello' repeats (line 6)"), std::string::npos) << dup.status();
  EXPECT_FALSE(WordPieceTokenizer::Load(path + ".absent").ok());
  { std::ofstream(path) << "[PAD]\r\n[UNK]\r\n[CLS]\r\n[SEP]\r\nhello\r\n"; }
  auto ok = WordPieceTokenizer::Load(path);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->Tokenize("Hello"), (Strings{"hello"}));
}

// The synthetic text task: every label follows its rule (more good words than
// bad, "not" flipping a word's side), the vocabulary covers every piece, and
// "not" appears only in the negation variant.
TEST(TextTask, LabelsFollowTheRuleAndTheVocabularyCoversEveryPiece) {
  const std::set<std::string> good = {"great", "superb", "lovely", "helpful", "quick", "friendly", "excellent", "happy"};
  const std::set<std::string> bad = {"awful", "slow", "rude", "broken", "terrible", "useless", "late", "angry"};
  WordPieceTokenizer tok = WordPieceTokenizer::FromVocab(TextTaskVocab());
  for (bool negation : {false, true}) {
    int nots = 0;
    for (const TextExample& e : MakeTextTask(300, 7, negation)) {
      int score = 0;
      bool negate = false;
      for (const std::string& word : tok.BasicTokenize(e.text)) {
        std::string stem = word.size() > 1 && word.back() == 's' && (good.count(word.substr(0, word.size() - 1)) ||
                                                                     bad.count(word.substr(0, word.size() - 1)))
                               ? word.substr(0, word.size() - 1)
                               : word;
        if (stem == "not") {
          negate = true;
          ++nots;
          continue;
        }
        int side = good.count(stem) ? 1 : bad.count(stem) ? -1 : 0;
        score += negate ? -side : side;
        negate = false;
      }
      ASSERT_NE(score, 0) << e.text;
      EXPECT_EQ(e.label, score > 0 ? 1 : 0) << e.text;
      for (const std::string& piece : tok.Tokenize(e.text)) EXPECT_NE(piece, "[UNK]") << e.text;
    }
    EXPECT_EQ(nots > 0, negation);
  }
}

}  // namespace
}  // namespace quanta::data
