// Classification metrics from predicted and true class ids: accuracy, the
// confusion matrix, per-class precision/recall/F1, macro F1, and binary F1 for
// the positive class 1 (scikit-learn's f1_score defaults). Host-side counting;
// not a differentiable loss.
//
//   ClassificationMetrics m = Classify(Argmax(logits, 1), labels, /*num_classes=*/2);
//   std::printf("acc %.2f%%  F1 %.2f%%\n", 100 * m.accuracy, 100 * m.f1());   // binary F1 for 2 classes
//   m.macro_f1;                     // mean over classes of 2PR / (P + R)
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace quanta::nn {

struct ClassificationMetrics {
  int64_t count = 0;
  double accuracy = 0;
  std::vector<std::vector<int64_t>> confusion;  // [true][predicted]
  // Per class; a class with no prediction (or no example) has precision (recall)
  // 0, and F1 0 when both are 0, as scikit-learn's zero_division=0.
  std::vector<double> precision, recall, f1_per_class;
  double macro_f1 = 0;
  // The F1 a report quotes: class 1's for a binary task, macro F1 otherwise.
  double f1() const { return f1_per_class.size() == 2 ? f1_per_class[1] : macro_f1; }
};

// predictions and labels: i64 (N) in [0, num_classes); throws quanta::Error on
// a length mismatch or an id out of range, naming it.
ClassificationMetrics Classify(const Tensor& predictions, const Tensor& labels, int64_t num_classes);

}  // namespace quanta::nn
