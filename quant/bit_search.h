// Automatic mixed precision: how much the loss rises when one layer alone has
// its weights quantized, at each candidate width, and the per-layer widths that
// rise least within a budget of average weight bits, written as a policy.
//
//   auto loss = [&] { return MeanLoss(model, calibration); };   // the f32 model, eval mode
//   std::vector<LayerSensitivity> s = MeasureSensitivity(model, loss, {.budget = 3.0});
//   BitSearchResult r = SearchBits(s, {.budget = 3.0});
//   std::string policy = BitPolicyText(s, r, options);           // what --policy reads
//
// Note [Bit search]: a layer's sensitivity at b bits is loss(its weights
// quantized at b bits, per output channel, symmetric, the range by the MSE
// observer's search; every other layer and all activations in float) minus
// the float loss, on the calibration batches. The search assumes the increases
// add up (as HAWQ and ModelOpt's AutoQuantize do) and solves the
// multiple-choice knapsack exactly by dynamic programming: minimize the summed
// increase subject to sum(weights * bits) <= budget * sum(weights) over the
// searched layers. With first_last_8bit, the first and last layers stay at 8
// bits, outside the search and the budget, as in the uniform policies.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "nn/module.h"

namespace quanta::quant {

struct BitSearchOptions {
  std::vector<int> candidates = {2, 3, 4, 8};  // weight bits a layer may get
  double budget = 4.0;  // average weight bits over the searched layers, weighted by their weights
  int act_bits = 8;     // the activations' bits in the policy's lines
  bool first_last_8bit = true;
  std::string quantizer;  // the policy lines' quantizer word, or "" (the trainer's)
};

struct LayerSensitivity {
  std::string name;
  int64_t weights = 0;
  bool searched = true;               // false: first or last layer, kept at 8 bits
  std::vector<double> loss_increase;  // per candidate (options.candidates' order)
};

// `loss` evaluates the model as it is (eval mode, no quantizers attached) on the
// calibration data. Each layer's weight is restored exactly after its turn.
std::vector<LayerSensitivity> MeasureSensitivity(nn::Module& model, const std::function<double()>& loss,
                                                 const BitSearchOptions& options);

struct BitSearchResult {
  std::vector<int> bits;      // per layer, in MeasureSensitivity's order
  double predicted_increase;  // the summed increases of the choice
  double average_bits;        // over the searched layers
};
// Throws quanta::Error when even the smallest candidate exceeds the budget.
BitSearchResult SearchBits(const std::vector<LayerSensitivity>& layers, const BitSearchOptions& options);

// "default 8 A [quantizer]", "first_last_8bit off", one "NAME W A [quantizer]"
// line per layer, with the search's figures as comments.
std::string BitPolicyText(const std::vector<LayerSensitivity>& layers, const BitSearchResult& result,
                          const BitSearchOptions& options);

}  // namespace quanta::quant
