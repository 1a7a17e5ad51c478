// AdaRound (Nagel et al., ICML 2020, "Up or Down? Adaptive Rounding for
// Post-Training Quantization"): after Calibrate has fixed every weight's
// quantization step, each weight is rounded up or down as learned, layer by
// layer, so that the layer's output on the calibration set stays close to the
// float model's, instead of to the nearest grid point.
//
//   PrepareReport r = PrepareQat(*net, policy);             // e.g. W4A4, mse ranges
//   Calibrate(r, *net, batches, forward);
//   auto rows = AdaRound(r, *net, batches, forward, {});   // weights now on the learned grid
//   auto q = Convert(*net);                                // the same integers
//
// Note [AdaRound]: for a layer with weights W, steps s (per output channel)
// and zero point z, the soft weight is
//     W~ = s (clamp(floor(W / s) + z + h(V), qmin, qmax) - z),
//     h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1),  zeta = 1.1, gamma = -0.1,
// V starts where h(V) = W / s - floor(W / s) (W~ = W inside the range), and Adam
// on V minimizes
//     mean over positions of sum over channels (f(W~ x_q) - f(W x_f))^2
//       + lambda sum (1 - |2 h(V) - 1|^beta),
// beta annealed linearly from beta_start to beta_end after a warm-up without
// the regularizer (the paper's schedule; BRECQ's code for the loss's scale).
// x_q is the layer's input in the quantized model with every earlier layer
// already rounded (the paper's asymmetric reconstruction), x_f the float
// model's; f is what the integer layer does after the product (the bias, the
// folded batch norm, and a fused ReLU unless a residual add comes before it:
// PlanLayers in quant/convert.h). At the end each weight is rounded up where
// V >= 0, and the layer's weight tensor is set to W~ itself, a point of the
// frozen grid, so fake quantization, Convert and a saved checkpoint all hold the
// learned integers: nothing downstream needs to know AdaRound ran. Where the
// learned rounding reconstructs the calibration set worse than nearest rounding
// (too few steps, a rate too high), the layer keeps nearest rounding and its row
// says so.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "nn/module.h"
#include "quant/prepare.h"

namespace quanta::quant {

struct AdaRoundOptions {
  int iterations = 2000;     // Adam steps per layer (the paper: 10,000)
  int batch_size = 32;       // examples (first dimension) per step
  double lr = 1e-3;          // Adam on V
  double reg_weight = 0.01;  // lambda
  double beta_start = 20, beta_end = 2;
  double warmup = 0.2;       // fraction of the steps without the regularizer
  uint64_t seed = 0;         // which examples each step draws
  // BRECQ (Li et al., ICLR 2021): a residual block's layers are learned together
  // to reconstruct the block's output (after its add and ReLU), the quantized
  // activations inside the block included; layers outside blocks as above.
  bool blocks = false;
};

// What AdaRound did to one layer: the reconstruction error (the loss's first
// term over the whole calibration set) with nearest rounding and with the
// learned rounding (as kept), and the fraction of weights rounded the other way.
struct AdaRoundRow {
  std::string name;
  int bits = 0;
  double mse_nearest = 0, mse_learned = 0;
  double flipped = 0;
  bool kept_nearest = false;  // the learned rounding was worse; nearest kept
};

// Note [BRECQ blocks]: with options.blocks, a block is the module that holds a
// layer followed by a residual add (PlanLayers: "layer1.0" for
// "layer1.0.conv2"), with every planned layer under it, which must be
// contiguous in the plan with the block's input read by the first. The block's
// input x_q is captured where its first layer quantizes it (re-quantizing a
// value already on that grid leaves it as it is, so the block's own Forward runs
// on it unchanged), the target is the float block on the float input, and the
// block's weight quantizers are off while its weight tensors hold the soft grid
// values. One row per block ("layer1.0 (block of 2)").
//
// Runs the reconstruction for every Conv2d/Linear of the report with a weight
// quantizer, in the order the model runs them (PlanLayers; report order for a
// model without an integer form, with f the bias alone). The weight quantizers
// must be ready and symmetric or not, but not learning their step (LSQ: the step
// stays as it is). `forward` runs the model on a batch; `batches` are the
// calibration batches (unaugmented training data). Throws quanta::Error naming
// the layer for a ConvBn2d (its quantizer sees a folded weight that is not a
// parameter) or a quantizer that has not seen data. Restores the model's mode
// and every quantizer's enabled state.
std::vector<AdaRoundRow> AdaRound(const PrepareReport& report, nn::Module& model, const std::vector<Tensor>& batches,
                                  const std::function<Tensor(const Tensor&)>& forward,
                                  const AdaRoundOptions& options = {});
// The rows as a table (layer, bits, MSE nearest -> learned, flipped %).
std::string AdaRoundTable(const std::vector<AdaRoundRow>& rows);

}  // namespace quanta::quant
