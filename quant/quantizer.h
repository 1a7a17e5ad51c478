// Quantizers: layers that fake-quantize what flows through them, the unit QAT
// attaches to weights and activations. FakeQuant takes its range from an
// observer (EMA by default) and passes gradients by STE or EWGS; LsqQuantizer
// learns its step size (and, for affine activations, an offset: LSQ+).
//
//   auto wq = std::make_shared<FakeQuant>(QuantSpec{.bits = 4, .per_channel = true},
//                                         ObserverKind::kEmaMinMax, FakeQuantGradient::kEwgs, 0.2);
//   Tensor w_q = wq->Forward(weight);      // observes (in training), then fake-quantizes
//   auto aq = std::make_shared<LsqQuantizer>(QuantSpec{.bits = 4, .symmetric = false});
#pragma once

#include <functional>
#include <memory>

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
class LsqQuantizer : public Quantizer {
 public:
  // channels: the number of step sizes (x.size(axis) per channel, else 1).
  explicit LsqQuantizer(const QuantSpec& spec, int64_t channels = 1, bool activation = false);
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
};

}  // namespace quanta::quant
