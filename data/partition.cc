// DirichletSplit: gamma draws from std::gamma_distribution on a seeded
// mt19937_64 (the same split on every rank of a job).
#include "data/partition.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "core/error.h"
#include "core/ops.h"

namespace quanta::data {

std::vector<std::vector<int64_t>> DirichletSplit(const std::vector<int64_t>& labels, int64_t classes, int clients,
                                                 double alpha, uint64_t seed) {
  QUANTA_CHECK(clients >= 1 && classes >= 1 && alpha > 0, "dirichlet_split: ", clients, " clients, ", classes,
               " classes, alpha ", alpha, " (need clients >= 1, classes >= 1, alpha > 0)");
  std::vector<std::vector<int64_t>> by_class(classes);
  for (size_t i = 0; i < labels.size(); ++i) {
    QUANTA_CHECK(labels[i] >= 0 && labels[i] < classes, "dirichlet_split: label ", labels[i], " of example ", i,
                 " outside [0, ", classes, ")");
    by_class[labels[i]].push_back(static_cast<int64_t>(i));
  }
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + 17);
  std::gamma_distribution<double> gamma(alpha, 1.0);
  std::vector<std::vector<int64_t>> parts(clients);
  for (auto& members : by_class) {
    std::shuffle(members.begin(), members.end(), rng);
    std::vector<double> p(clients);
    double sum = 0;
    for (double& v : p) sum += (v = gamma(rng));
    if (!(sum > 0)) std::fill(p.begin(), p.end(), sum = 1.0);  // every draw underflowed (tiny alpha)
    // Cut points at the rounded cumulative proportions: the counts add up exactly.
    double cumulative = 0;
    size_t begin = 0;
    for (int c = 0; c < clients; ++c) {
      cumulative += p[c] / sum;
      size_t end = c == clients - 1 ? members.size()
                                    : std::min(members.size(), static_cast<size_t>(std::llround(cumulative * members.size())));
      end = std::max(end, begin);
      parts[c].insert(parts[c].end(), members.begin() + begin, members.begin() + end);
      begin = end;
    }
  }
  for (auto& part : parts) std::sort(part.begin(), part.end());
  return parts;
}

std::shared_ptr<ImageDataset> Subset(const ImageDataset& d, const std::vector<int64_t>& indices) {
  std::vector<int64_t> labels;
  labels.reserve(indices.size());
  for (int64_t i : indices) {
    QUANTA_CHECK(i >= 0 && i < d.size(), "subset: index ", i, " outside [0, ", d.size(), ")");
    labels.push_back(d.labels()[i]);
  }
  Shape shape = d.images().shape();
  shape[0] = static_cast<int64_t>(indices.size());
  Tensor picked = Tensor::Empty(shape, DType::kU8);
  const int64_t row = d.images().numel() / std::max<int64_t>(d.size(), 1);
  const auto* src = static_cast<const uint8_t*>(d.images().raw_data());
  auto* dst = static_cast<uint8_t*>(picked.raw_data());
  for (size_t k = 0; k < indices.size(); ++k) std::copy(src + indices[k] * row, src + (indices[k] + 1) * row, dst + k * row);
  return std::make_shared<ImageDataset>(picked, std::move(labels), d.num_classes(), d.class_names());
}

}  // namespace quanta::data
