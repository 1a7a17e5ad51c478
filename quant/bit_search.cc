// Per-layer sensitivity and the knapsack over bit widths (Note [Bit search]).
#include "quant/bit_search.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/error.h"
#include "core/grad_mode.h"
#include "core/ops.h"
#include "nn/layers.h"
#include "quant/convert.h"
#include "quant/observer.h"

namespace quanta::quant {

std::vector<LayerSensitivity> MeasureSensitivity(nn::Module& model, const std::function<double()>& loss,
                                                 const BitSearchOptions& options) {
  QUANTA_CHECK(!options.candidates.empty(), "bit search: no candidate bit widths");
  for (int b : options.candidates) {
    QUANTA_CHECK(b >= 2 && b <= 8, "bit search: candidate bits ", b, " outside [2, 8]");
  }
  std::vector<std::pair<std::string, nn::QuantizableLayer*>> layers;
  for (auto& [name, m] : model.NamedModules()) {
    if (auto* q = dynamic_cast<nn::QuantizableLayer*>(m)) layers.emplace_back(name, q);
  }
  QUANTA_CHECK(!layers.empty(), "bit search: the model has no Conv2d or Linear layer");
  NoGradGuard no_grad;
  const double base = loss();
  std::vector<LayerSensitivity> out;
  for (size_t i = 0; i < layers.size(); ++i) {
    Tensor& w = WeightOf(layers[i].second);
    LayerSensitivity s{.name = layers[i].first, .weights = w.numel()};
    s.searched = !(options.first_last_8bit && (i == 0 || i + 1 == layers.size()));
    if (s.searched) {
      const Tensor saved = w.Clone();
      for (int b : options.candidates) {
        QuantSpec spec{.bits = b, .is_signed = true, .symmetric = true, .per_channel = true, .axis = 0};
        auto observer = MakeObserver(ObserverKind::kMse, spec);
        observer->Observe(saved);
        auto [scale, zp] = observer->Params();
        w.CopyFrom(FakeQuantize(saved, scale, zp, {.quant_min = spec.quant_min(), .quant_max = spec.quant_max(), .axis = 0}));
        s.loss_increase.push_back(loss() - base);
        w.CopyFrom(saved);
      }
    }
    out.push_back(std::move(s));
  }
  return out;
}

BitSearchResult SearchBits(const std::vector<LayerSensitivity>& layers, const BitSearchOptions& options) {
  const std::vector<int>& cand = options.candidates;
  BitSearchResult r{.bits = std::vector<int>(layers.size(), 8), .predicted_increase = 0, .average_bits = 8};
  std::vector<size_t> searched;
  int64_t total = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (!layers[i].searched) continue;
    QUANTA_CHECK(layers[i].loss_increase.size() == cand.size(), "bit search: ", layers[i].name, " has ",
                 layers[i].loss_increase.size(), " sensitivities for ", cand.size(), " candidates");
    searched.push_back(i);
    total += layers[i].weights;
  }
  if (searched.empty()) return r;
  const double budget_bits = std::floor(options.budget * static_cast<double>(total));
  const int smallest = *std::min_element(cand.begin(), cand.end());
  QUANTA_CHECK(static_cast<double>(smallest) * total <= budget_bits, "bit search: a budget of ", options.budget,
               " bits per weight is below the smallest candidate (", smallest, " bits)");
  // Costs in units of u bits, rounded up, so any choice within the capacity is
  // within the budget (exact up to 1 / 20000 of it).
  const double u = std::max(1.0, std::ceil(budget_bits / 20000));
  const int64_t cap = static_cast<int64_t>(std::floor(budget_bits / u));
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> best(cap + 1, 0.0), next(cap + 1);
  std::vector<std::vector<int8_t>> choice(searched.size(), std::vector<int8_t>(cap + 1, -1));
  auto cost_of = [&](const LayerSensitivity& l, size_t c) {
    return static_cast<int64_t>(std::ceil(static_cast<double>(l.weights) * cand[c] / u));
  };
  for (size_t k = 0; k < searched.size(); ++k) {
    const LayerSensitivity& l = layers[searched[k]];
    std::fill(next.begin(), next.end(), inf);
    for (size_t c = 0; c < cand.size(); ++c) {
      int64_t cost = cost_of(l, c);
      for (int64_t b = cost; b <= cap; ++b) {
        double v = best[b - cost] + l.loss_increase[c];
        if (v < next[b]) {
          next[b] = v;
          choice[k][b] = static_cast<int8_t>(c);
        }
      }
    }
    best.swap(next);
  }
  QUANTA_CHECK(best[cap] < inf, "bit search: no choice fits a budget of ", options.budget, " bits");
  int64_t b = cap;
  int64_t used = 0;
  for (size_t k = searched.size(); k-- > 0;) {
    int c = choice[k][b];
    const LayerSensitivity& l = layers[searched[k]];
    r.bits[searched[k]] = cand[c];
    r.predicted_increase += l.loss_increase[c];
    used += l.weights * cand[c];
    b -= cost_of(l, c);
  }
  r.average_bits = static_cast<double>(used) / static_cast<double>(total);
  return r;
}

std::string BitPolicyText(const std::vector<LayerSensitivity>& layers, const BitSearchResult& result,
                          const BitSearchOptions& options) {
  const std::string q = options.quantizer.empty() ? "" : " " + options.quantizer;
  std::string out = absl::StrFormat(
      "# Written by the bit search (quant/bit_search.h): %.3f weight bits on average over the searched layers "
      "(budget %.3f), predicted loss increase %.4g.\n# Candidates:",
      result.average_bits, options.budget, result.predicted_increase);
  for (int b : options.candidates) absl::StrAppend(&out, " ", b);
  absl::StrAppend(&out, "; each line's comment: the loss increase with that layer alone quantized, per candidate.\n");
  absl::StrAppend(&out, "default 8 ", options.act_bits, q, "\nfirst_last_8bit off\n");
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerSensitivity& l = layers[i];
    std::string comment = l.searched ? "" : "  # first or last layer: 8 bits";
    for (size_t c = 0; c < l.loss_increase.size(); ++c) {
      absl::StrAppend(&comment, c == 0 ? "  # " : ", ", options.candidates[c], ":", absl::StrFormat("%.4g", l.loss_increase[c]));
    }
    absl::StrAppend(&out, l.name, " ", result.bits[i], " ", l.searched ? options.act_bits : 8, q, comment, "\n");
  }
  return out;
}

}  // namespace quanta::quant
