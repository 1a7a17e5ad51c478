// Observers: they watch tensors and turn the range they saw into quantization
// parameters (scale, zero point) for a QuantSpec. Their state is module buffers,
// so checkpoints save it. Not here: applying the parameters (quant/quantizer.h).
//
//   QuantSpec spec{.bits = 4, .symmetric = true, .per_channel = true, .axis = 0};
//   auto obs = MakeObserver(ObserverKind::kEmaMinMax, spec);   // decay 0.999
//   obs->Observe(weight);
//   auto [scale, zero_point] = obs->Params();                 // f32 (C) tensors
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "core/tensor.h"
#include "nn/module.h"

namespace quanta::quant {

// What a tensor is quantized to: bits 2..8, signed or not, symmetric (zero point
// at the middle) or affine, per tensor or per channel along axis.
struct QuantSpec {
  int bits = 8;
  bool is_signed = true;
  bool symmetric = true;
  bool per_channel = false;
  int axis = 0;
  // [-2^(b-1) + 1, 2^(b-1) - 1] when signed and symmetric (the design's
  // round(x / alpha * (2^(b-1) - 1))), [-2^(b-1), 2^(b-1) - 1] signed affine,
  // [0, 2^b - 1] unsigned.
  int64_t quant_min() const;
  int64_t quant_max() const;
  std::string ToString() const;  // "w4 sym per-channel(0)"
};

// kEmaAbsMax: the design's symmetric EMA, alpha_t = d alpha_(t-1) + (1 - d) max|x_t|;
// kEmaMinMax: the (min, max) pair averaged, for affine specs.
enum class ObserverKind { kMinMax, kEmaMinMax, kEmaAbsMax, kPercentile, kMse };

class Observer : public nn::Module {
 public:
  explicit Observer(const QuantSpec& spec);
  virtual void Observe(const Tensor& x) = 0;
  // Scale and zero point (f32, one value or one per channel) for the range seen.
  std::pair<Tensor, Tensor> Params() const;
  // The range the parameters are computed from (after the observer's choice).
  virtual std::pair<Tensor, Tensor> Range() const;
  bool observed() const { return observed_.item<float>() > 0; }
  const QuantSpec& spec() const { return spec_; }
  void SetSpec(const QuantSpec& spec) { spec_ = spec; }
  // Forgets what was seen (re-warms), keeping the spec.
  virtual void Reset();

 protected:
  // Reduces x to per-tensor or per-channel min and max (f32).
  std::pair<Tensor, Tensor> BatchRange(const Tensor& x) const;
  // With a decay: exponential moving averages (decay 0 keeps the latest batch);
  // without: the min and max of everything so far.
  void UpdateRange(const Tensor& lo, const Tensor& hi, std::optional<double> ema_decay);

  QuantSpec spec_;
  Tensor min_val_, max_val_;  // buffers
  Tensor observed_;           // buffer: 0 or 1
};

// The running min and max of everything seen.
class MinMaxObserver : public Observer {
 public:
  using Observer::Observer;
  void Observe(const Tensor& x) override;
};

// min and max as exponential moving averages: m = decay m + (1 - decay) batch.
// Decay 0 follows the latest batch: what weight quantizers use (weights move
// every step; their current range is known exactly).
class EmaMinMaxObserver : public Observer {
 public:
  EmaMinMaxObserver(const QuantSpec& spec, double decay = 0.999) : Observer(spec), decay_(decay) {}
  void Observe(const Tensor& x) override;
  double decay() const { return decay_; }

 private:
  double decay_;
};

// The design's symmetric EMA (beta = 0): alpha = decay alpha + (1 - decay) max|x|
// per tensor or channel, the first batch's max|x| to start; the range is
// [-alpha, alpha] (signed) or [0, alpha] (unsigned). Symmetric specs only.
class EmaAbsMaxObserver : public Observer {
 public:
  EmaAbsMaxObserver(const QuantSpec& spec, double decay = 0.999);
  void Observe(const Tensor& x) override;
  double decay() const { return decay_; }

 private:
  double decay_;
};

// The given percentile of |x| (symmetric) or of x at both ends (affine), from a
// histogram of everything seen. Per tensor.
class PercentileObserver : public Observer {
 public:
  PercentileObserver(const QuantSpec& spec, double percentile = 99.99, int bins = 2048);
  void Observe(const Tensor& x) override;
  std::pair<Tensor, Tensor> Range() const override;
  void Reset() override;

 private:
  double percentile_;
  int bins_;
  Tensor histogram_;  // buffer: bins over [min_val_, max_val_] at the time of each add
};

// Searches the clipping range that minimizes the quantization MSE of the last
// batch seen (candidates: a fraction of the min/max range, 1% steps down to 30%).
class MseObserver : public Observer {
 public:
  using Observer::Observer;
  void Observe(const Tensor& x) override;
  std::pair<Tensor, Tensor> Range() const override;
  int searches() const { return searches_; }  // how many times the search ran (tests)

 private:
  Tensor last_;  // the last batch (not saved)
  mutable int searches_ = 0;
  // The search's answer (71 fake-quantization passes over the last batch) for
  // the range, spec and device it was computed at: every forward pass asks for
  // the parameters, and recomputing each time made an MSE-calibrated model's
  // evaluation ~70x slower. A new batch, a loaded range or a new spec misses.
  struct Searched {
    std::vector<float> lo, hi;
    std::string spec;
    Device device;
    std::pair<Tensor, Tensor> range;
  };
  mutable std::optional<Searched> searched_;
};

std::shared_ptr<Observer> MakeObserver(ObserverKind kind, const QuantSpec& spec, double ema_decay = 0.999);

// Note [Range to parameters]: the one rule from a range [lo, hi] to (scale, zero
// point), used by the observers, LSQ's start, the dynamic int8 path of
// IntegerLinear and conversion. The range is widened to hold 0. Symmetric:
// scale = max(|lo|, |hi|) / quant_max, zero point 0. Affine: scale = (hi - lo) /
// (quant_max - quant_min), zero point = clamp(quant_min - rint(lo / scale)),
// rint rounding ties to even. Scales never go below 1e-8. Computed in f32, the
// type the scale tensors (and the fake quantizer) hold.
struct RangeParams {
  float scale;
  int64_t zero_point;
};
// Per element of lo and hi (one value or one per channel), as f32 tensors on their device.
std::pair<Tensor, Tensor> ParamsForRange(const Tensor& lo, const Tensor& hi, const QuantSpec& spec);
// One range on the host (the same rule, through the tensor form).
RangeParams ParamsForRange(float lo, float hi, const QuantSpec& spec);

}  // namespace quanta::quant
