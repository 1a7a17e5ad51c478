// A small synthetic image task with a known answer, for tests and benchmarks:
// 4 classes of 1x12x12 images; class k brightens quadrant k by `signal` over
// unit Gaussian noise, so accuracy depends on `signal` (1.0: about 90% for a
// small CNN). Deterministic from the seed. Not a data set to report accuracy on.
//
//   QuadrantTask train = MakeQuadrantTask(512, /*seed=*/1, /*signal=*/1.0);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace quanta::data {

struct QuadrantTask {
  Tensor images;  // f32 (N, 1, 12, 12)
  Tensor labels;  // i64 (N)
};
QuadrantTask MakeQuadrantTask(int64_t n, uint64_t seed, double signal);

// A text-classification task for BERT tests and train_bert: sentences of 6-14
// words from a fixed word list, label 1 when they hold more "good" words
// ("great", "superb", ...) than "bad" ones, else 0 (never a tie); some words
// carry "##"-split suffixes. With negation, a third of the sentiment words come
// as "not great" (counting as bad) and "not rude" (good): the label then depends
// on word order, which a bag of words cannot learn. Its vocabulary (special
// tokens first) covers every piece. Lines are "label<TAB>text", train_bert's
// file format.
struct TextExample {
  int64_t label;
  std::string text;
};
std::vector<TextExample> MakeTextTask(int64_t n, uint64_t seed, bool negation = false);
std::vector<std::string> TextTaskVocab();

}  // namespace quanta::data
