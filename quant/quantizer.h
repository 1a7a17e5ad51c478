// Quantizers: layers that fake-quantize what flows through them, the unit QAT
// attaches to weights and activations. FakeQuant takes its range from an
// observer (EMA by default) and passes gradients by STE or EWGS; LsqQuantizer
// learns its step size (and, for affine activations, an offset: LSQ+).
//
//   auto wq = std::make_shared<FakeQuant>(QuantSpec{.bits = 4, .per_channel = true},
//                                         ObserverKind::kEmaMinMax, FakeQuantGradient::kEwgs, 0.2);
//   Tensor w_q = wq->Forward(weight);      // observes (in training), then fake-quantizes
//   auto aq = std::make_shared<LsqQuantizer>(QuantSpec{.bits = 4, .symmetric = false});
//   auto apot = std::make_shared<ApotQuantizer>(3);   // weights on {0, +-1/4, +-1/2, +-1} * alpha * sigma
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/ops.h"
#include "nn/module.h"
#include "quant/observer.h"

namespace quanta::quant {

class Quantizer : public nn::Layer {
 public:
  explicit Quantizer(const QuantSpec& spec) : spec_(spec) {}
  const QuantSpec& spec() const { return spec_; }
  // Changes the bit width (progressive quantization) and re-warms the range.
  virtual void SetBits(int bits) = 0;
  // Scale and zero point in use (f32, one value or one per channel).
  virtual std::pair<Tensor, Tensor> Params() const = 0;
  virtual bool ready() const = 0;  // has parameters (has seen data)
  void SetEnabled(bool enabled) { enabled_ = enabled; }
  bool enabled() const { return enabled_; }
  // While on, keeps the last output and statistics of what came in (the report's
  // activation columns; PTQ bias correction reads the output).
  void SetRecording(bool on) { recording_ = on; }
  struct Stats {
    double clip_rate = 0, sqnr_db = 0, abs_p50 = 0, abs_p99 = 0, abs_max = 0;
    bool valid = false;
  };
  const Stats& stats() const { return stats_; }
  const Tensor& last_output() const { return last_output_; }

  // A weight w as the integer model stores it: integers (w's order) and one scale
  // per output channel (or one), so that the eval-mode Forward(w) equals
  // codes * scale; [qmin, qmax] bounds the codes; clip is the fraction of w
  // beyond the outermost level. The default rounds w / scale (Params(), zero
  // points 0) into the spec's range; ApotQuantizer returns its codebook's codes.
  struct WeightGrid {
    std::vector<int32_t> codes;
    std::vector<double> scales;
    int64_t qmin = 0, qmax = 0;
    double clip = 0;
  };
  virtual WeightGrid Grid(const Tensor& w) const;

 protected:
  FakeQuantOptions Options() const;
  // When recording: x came in, y went out, quantized with steps `scale`.
  void Record(const Tensor& x, const Tensor& y, const Tensor& scale);
  QuantSpec spec_;
  bool enabled_ = true;
  bool recording_ = false;
  Stats stats_;
  Tensor last_output_;
};

class FakeQuant : public Quantizer {
 public:
  FakeQuant(const QuantSpec& spec, ObserverKind observer = ObserverKind::kEmaMinMax,
            FakeQuantGradient gradient = FakeQuantGradient::kSte, double ewgs_delta = 0, double ema_decay = 0.999);
  Tensor Forward(const Tensor& x) override;
  void SetBits(int bits) override;
  std::pair<Tensor, Tensor> Params() const override { return observer_->Params(); }
  bool ready() const override { return observer_->observed(); }
  // Observing happens in training mode (or while calibrating) unless frozen.
  void SetObserving(bool on) { observing_ = on; }
  bool observing() const { return observing_; }
  void SetCalibrating(bool on) { calibrating_ = on; }
  Observer& observer() { return *observer_; }
  // EWGS's delta (EstimateEwgsDelta in quant/prepare.h sets it adaptively).
  double ewgs_delta() const { return ewgs_delta_; }
  void SetEwgsDelta(double delta) { ewgs_delta_ = delta; }
  FakeQuantGradient gradient() const { return gradient_; }
  // For Hessian estimates: a constant added to the output, and a callback that
  // receives the gradient arriving at the output. Empty/undefined: off.
  void SetProbe(Tensor perturbation, std::function<void(const Tensor&)> on_grad) {
    perturbation_ = std::move(perturbation);
    on_grad_ = std::move(on_grad);
  }

 private:
  std::shared_ptr<Observer> observer_;
  FakeQuantGradient gradient_;
  double ewgs_delta_;
  bool observing_ = true, calibrating_ = false;
  Tensor perturbation_;
  std::function<void(const Tensor&)> on_grad_;
};

// LSQ (Esser et al. 2020): the step size is a parameter, initialized from the
// first batch as 2 mean(|x|) / sqrt(Qp), its gradient scaled by 1 / sqrt(N Qp):
// N is the number of weights per step size for a weight quantizer, and for an
// activation quantizer the features of one example (the paper's N_F: the batch
// is not counted). Affine specs also learn an offset (LSQ+).
//
// Note [LSQ+ offsets on the integer grid]: the learned offset is a real number,
// but the forward pass uses it rounded (ties to even) with a straight-through
// gradient, so training quantizes on the grid the integer model uses; Params()
// returns the rounded zero point.
// How LSQ's step (and LSQ+'s offset) start, from the first batch: kPaper as
// above (affine specs from min/max); kMse: the MSE observer's choice, the range
// whose fake-quantized values are closest to the batch (LSQ+ starts so too).
enum class LsqInit { kPaper, kMse };

class LsqQuantizer : public Quantizer {
 public:
  // channels: the number of step sizes (x.size(axis) per channel, else 1).
  explicit LsqQuantizer(const QuantSpec& spec, int64_t channels = 1, bool activation = false,
                        LsqInit init = LsqInit::kPaper);
  Tensor Forward(const Tensor& x) override;
  void SetBits(int bits) override;
  std::pair<Tensor, Tensor> Params() const override;
  bool ready() const override { return initialized.item<float>() > 0; }
  bool activation() const { return activation_; }
  Tensor scale;        // parameter: (1) or (C)
  Tensor offset;       // parameter for affine specs (in steps), else a zero buffer
  Tensor initialized;  // buffer: 0 or 1

 private:
  void Initialize(const Tensor& x);
  bool activation_;
  LsqInit init_;
};

// APoT (Li, Dong and Wang, ICLR 2020) for weights: levels that are sums of
// powers of two, a learned clipping threshold alpha, weight normalization.
//
//   x = (w - mean(w)) / (std(w) alpha)          mean and std of this weight, constants
//   w_q = std(w) alpha P(clamp(x, -1, 1))       P: the nearest level (ties: the smaller)
//
// The paper takes one alpha, mean and std per layer; with channels = C each
// output channel has its own (the row w[c]), as per-channel LSQ steps do.
//
// The levels for b bits (sign plus b - 1 bits of magnitude, the paper's
// construction with the maximum normalized to 1) as integer codes over M:
//   2 bits: {0, 1} / 1                 (ternary; the paper's smallest APoT set is 3 bits)
//   3 bits: {0, 1, 2, 4} / 4           (powers of two)
//   4 bits: {0, 1, 2, 3, 4, 6, 8, 10} / 10    ({0, 2^-1, 2^-2, 2^-4} + {0, 2^-3})
//   5 bits: the 16 sums of {0, 2^-1, 2^-3, 2^-5} and {0, 2^-2, 2^-4, 2^-6}, / 48
// Every level is an integer code c in [-M, M] times the step std(w) alpha / M,
// so the converted layer runs on the int8 kernels exactly (4 bits: codes in
// [-10, 10], stored as 4-bit indices into a codebook of 15 values).
//
// Gradients (the paper's reparameterized clipping function): straight through
// to w, unclipped; to alpha, std(w) * (P(x) - x) inside [-1, 1] and
// std(w) * sign(x) outside, summed over the tensor. Multiplying std(w) back
// (the paper's layers feed normalized weights to the convolution and let batch
// norm absorb the scale) keeps the weight at the trained model's magnitude, so
// batch-norm folding and running statistics see what they saw in f32; the
// function of the network and alpha's gradient are the same.
//
// Note [APoT's alpha at the start]: the paper starts alpha at 3 (in units of the
// standard deviation). Fine-tuning from a trained model here starts it at the
// value in [1, 6] (steps of 0.05) that minimizes |w_q - (w - mean)|^2 for the
// first weights seen, the same search the MSE observer runs for uniform grids.
class ApotQuantizer : public Quantizer {
 public:
  // bits: 2 to 5. channels: 1 (one threshold for the tensor, as the paper) or
  // w.size(0) (one per output channel, mean and std per channel; PrepareQat's
  // choice, as for the other weight quantizers).
  explicit ApotQuantizer(int bits, int64_t channels = 1);
  Tensor Forward(const Tensor& w) override;
  void SetBits(int bits) override;
  // The steps std(w) alpha / M of the weights last seen (1 or C), zero points 0.
  std::pair<Tensor, Tensor> Params() const override;
  bool ready() const override { return initialized.item<float>() > 0; }
  WeightGrid Grid(const Tensor& w) const override;
  // The non-negative codes of `bits` bits, ascending (the largest is M).
  static std::vector<int32_t> Levels(int bits);
  Tensor alpha;        // parameter (1) or (C): the clipping thresholds in standard deviations
  Tensor initialized;  // buffer: 0 or 1
  Tensor last_std;     // buffer (1) or (C): std(w) at the last Forward

 private:
  void Initialize(const Tensor& w);
  std::vector<int32_t> levels_;
};

// Note [Block formats in policies]: the microscaling formats (core's
// BlockFormat, Note [Block scaling] in core/minifloat.h) as weight and
// activation formats of a layer, beside integer bits. A weight (O, ...) is
// blocked along its flattened reduction dim, (O, in * kh * kw), in 1 x 32 (MX)
// or 1 x 16 (NVFP4) groups, zero-padded to whole blocks; an activation along
// its reduction dim (a convolution's channels, a Linear's last dim). The scales
// come from each block's largest magnitude as it goes (online, the formats'
// definition), so there is nothing to observe or calibrate and nothing to
// learn: the gradient passes straight through (the STE). Names:
//   mxfp8 (E4M3), mxfp8_e5m2, mxfp6 (E2M3), mxfp6_e3m2, mxfp4 (E2M1): OCP MX v1.0,
//   32 elements and an E8M0 scale; nvfp4: 16 E2M1 elements, an E4M3 scale and a
//   per-tensor f32 scale.
std::optional<BlockFormat> BlockFormatFromName(std::string_view name);
// "mxfp4" for a named format, else BlockFormat::ToString().
std::string BlockFormatName(const BlockFormat& format);
std::string BlockFormatNames();  // "mxfp8, mxfp8_e5m2, mxfp6, mxfp6_e3m2, mxfp4, nvfp4"
// The element's bits (8, 6 or 4).
int BlockElementBits(const BlockFormat& format);

// x fake-quantized in `format`'s 1 x cols groups along dim (zero-padded to a
// whole group; a dim shorter than a group is one padded group).
Tensor BlockFakeQuantizeAlong(const Tensor& x, int64_t dim, const BlockFormat& format);
// The dim a Linear's or Conv2d's GEMM reduces over in its input x (and in its
// output gradient): the channels, dim 1, of a convolution's (N, C, H, W), else
// the last dim. Block-format activations and FP8 tiles are grouped along it.
int64_t LayerReductionDim(const Tensor& x);
// An activation (N, ...) as a layer's block-format input quantizer sees it:
// groups along LayerReductionDim;
// NVFP4's per-tensor scale is taken per sample, so that an example's result
// does not depend on the batch it came in.
Tensor BlockFakeQuantizeActivation(const Tensor& x, const BlockFormat& format);
// A weight (O, ...) as its (O, rest) matrix in format's rows x cols blocks,
// zero-padded to whole blocks: fake-quantized (w's shape), or stored (codes
// and scales of the padded matrix) and decoded back.
Tensor BlockFakeQuantizeWeight(const Tensor& w, const BlockFormat& format);
BlockQuantized BlockQuantizeWeight(const Tensor& w, const BlockFormat& format);
Tensor BlockDequantizeWeight(const BlockQuantized& q, const Shape& shape);
// What BlockQuantizeWeight stores for a weight of this shape: the padded
// elements, their scales and NVFP4's f32 tensor scale, in bytes.
int64_t BlockWeightBytes(const Shape& shape, const BlockFormat& format);

// A layer's weight or input quantizer in a block format (Note [Block formats
// in policies]). Params() is one scale of 1 (there is no per-tensor grid);
// Grid() throws: Convert stores the blocks themselves.
class BlockQuantizer : public Quantizer {
 public:
  BlockQuantizer(const BlockFormat& format, bool weight);
  Tensor Forward(const Tensor& x) override;
  void SetBits(int bits) override;  // throws: a block format has no bit width to change
  std::pair<Tensor, Tensor> Params() const override;
  bool ready() const override { return true; }
  WeightGrid Grid(const Tensor& w) const override;
  const BlockFormat& format() const { return format_; }
  bool weight() const { return weight_; }

 private:
  BlockFormat format_;
  bool weight_;
};

}  // namespace quanta::quant
