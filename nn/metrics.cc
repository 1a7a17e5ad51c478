// Classification metrics: counts on the host.
#include "nn/metrics.h"

#include "core/error.h"

namespace quanta::nn {

ClassificationMetrics Classify(const Tensor& predictions, const Tensor& labels, int64_t num_classes) {
  QUANTA_CHECK(predictions.dim() == 1 && labels.dim() == 1 && predictions.size(0) == labels.size(0),
               "Classify: predictions ", predictions.Describe(), " and labels ", labels.Describe(),
               " must be (N) each");
  QUANTA_CHECK(num_classes >= 1, "Classify: num_classes ", num_classes);
  std::vector<int64_t> p = predictions.To(DType::kI64).ToVector<int64_t>();
  std::vector<int64_t> y = labels.To(DType::kI64).ToVector<int64_t>();
  ClassificationMetrics m;
  m.count = static_cast<int64_t>(y.size());
  m.confusion.assign(num_classes, std::vector<int64_t>(num_classes, 0));
  int64_t correct = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    QUANTA_CHECK(y[i] >= 0 && y[i] < num_classes && p[i] >= 0 && p[i] < num_classes, "Classify: example ", i,
                 " has label ", y[i], " and prediction ", p[i], ", outside [0, ", num_classes, ")");
    ++m.confusion[y[i]][p[i]];
    correct += y[i] == p[i];
  }
  m.accuracy = m.count ? static_cast<double>(correct) / m.count : 0;
  for (int64_t c = 0; c < num_classes; ++c) {
    int64_t tp = m.confusion[c][c], predicted = 0, actual = 0;
    for (int64_t k = 0; k < num_classes; ++k) predicted += m.confusion[k][c], actual += m.confusion[c][k];
    double precision = predicted ? static_cast<double>(tp) / predicted : 0;
    double recall = actual ? static_cast<double>(tp) / actual : 0;
    m.precision.push_back(precision);
    m.recall.push_back(recall);
    m.f1_per_class.push_back(precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0);
    m.macro_f1 += m.f1_per_class.back() / num_classes;
  }
  return m;
}

}  // namespace quanta::nn
