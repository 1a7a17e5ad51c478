// The quadrant task: noise, then class k's quadrant raised by `signal`.
#include "data/synthetic.h"

#include <string>

#include <vector>

#include "core/grad_mode.h"
#include "core/ops.h"

namespace quanta::data {

QuadrantTask MakeQuadrantTask(int64_t n, uint64_t seed, double signal) {
  Generator gen(seed);
  Tensor images = Normal({n, 1, 12, 12}, 0, 1, &gen);
  std::vector<int64_t> labels(n);
  NoGradGuard no_grad;
  for (int64_t i = 0; i < n; ++i) {
    int64_t k = (i * 7 + 3) % 4;
    labels[i] = k;
    Tensor quadrant = images.Select(0, i).Narrow(1, (k / 2) * 6, 6).Narrow(2, (k % 2) * 6, 6);
    quadrant.CopyFrom(Add(quadrant, signal));
  }
  return {images, Tensor::FromVector<int64_t>(labels, {n})};
}

namespace {
const char* const kGood[] = {"great", "superb", "lovely", "helpful", "quick", "friendly", "excellent", "happy"};
const char* const kBad[] = {"awful", "slow", "rude", "broken", "terrible", "useless", "late", "angry"};
const char* const kNeutral[] = {"the", "a", "service", "agent", "order", "call", "was", "is", "and", "very",
                                "today", "my", "package", "refund", "support", "team", "it", "with", "of", "reply"};
}  // namespace

std::vector<TextExample> MakeTextTask(int64_t n, uint64_t seed, bool negation) {
  std::vector<TextExample> out;
  uint64_t counter = 0;
  auto draw = [&](int64_t k) { return static_cast<int64_t>(PhiloxUniform(seed, counter++) * k) % k; };
  while (static_cast<int64_t>(out.size()) < n) {
    int64_t words = 6 + draw(9), good = 0, bad = 0;
    std::string text;
    for (int64_t w = 0; w < words; ++w) {
      int64_t kind = draw(10);  // 2 in 10 good, 2 in 10 bad
      std::string word = kind < 2 ? kGood[draw(8)] : kind < 4 ? kBad[draw(8)] : kNeutral[draw(20)];
      bool flip = negation && kind < 4 && draw(3) == 0;  // "not great" counts as bad
      good += flip ? kind >= 2 && kind < 4 : kind < 2;
      bad += flip ? kind < 2 : kind >= 2 && kind < 4;
      if (draw(6) == 0) word += "s";  // "greats", "orders": a ##s piece
      if (flip) word = "not " + word;
      text += (text.empty() ? "" : " ") + word;
    }
    if (draw(3) == 0) text += draw(2) ? "!" : ".";
    if (good == bad) continue;
    // Without negation "not" never occurs, and the draws match the task's first version.
    out.push_back({good > bad ? 1 : 0, text});
  }
  return out;
}

std::vector<std::string> TextTaskVocab() {
  std::vector<std::string> v = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "!", ".", "##s"};
  for (const char* w : kGood) v.push_back(w);
  for (const char* w : kBad) v.push_back(w);
  for (const char* w : kNeutral) v.push_back(w);
  v.push_back("not");
  return v;
}

}  // namespace quanta::data
