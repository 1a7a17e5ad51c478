// FakeQuant and LSQ: the glue between observers or learned steps and fake_quantize.
#include "quant/quantizer.h"

#include <algorithm>
#include <cmath>

#include "autograd/autograd.h"
#include "core/error.h"
#include "core/grad_mode.h"

namespace quanta::quant {

FakeQuantOptions Quantizer::Options() const {
  return {.quant_min = spec_.quant_min(), .quant_max = spec_.quant_max(), .axis = spec_.per_channel ? spec_.axis : -1};
}

FakeQuant::FakeQuant(const QuantSpec& spec, ObserverKind observer, FakeQuantGradient gradient, double ewgs_delta,
                     double ema_decay)
    : Quantizer(spec), gradient_(gradient), ewgs_delta_(ewgs_delta) {
  observer_ = RegisterModule("observer", MakeObserver(observer, spec, ema_decay));
}

Tensor FakeQuant::Forward(const Tensor& x) {
  if (observing_ && (is_training() || calibrating_)) observer_->Observe(x);
  if (!enabled_ || calibrating_ || !observer_->observed()) return x;
  auto [scale, zp] = observer_->Params();
  FakeQuantOptions o = Options();
  o.gradient = gradient_;
  o.ewgs_delta = ewgs_delta_;
  Tensor y = FakeQuantize(x, scale, zp, o);
  if (on_grad_) {
    // A leaf that requires grad makes y require grad even when nothing before it
    // does (an input quantizer of the first layer); its value is the probe's.
    Tensor probe = (perturbation_.defined() ? perturbation_ : ZerosLike(y)).Detach().SetRequiresGrad();
    y = Add(y, probe);
    RegisterHook(y, [fn = on_grad_](const Tensor& g) {
      fn(g);
      return Tensor();
    });
  } else if (perturbation_.defined()) {
    y = Add(y, perturbation_);
  }
  Record(x, y, scale);
  return y;
}

void Quantizer::Record(const Tensor& x, const Tensor& y, const Tensor& scale) {
  if (!recording_) return;
  NoGradGuard no_grad;
  last_output_ = y.Detach();
  std::vector<float> sorted = Abs(x.Detach()).To(DType::kF32).ToVector<float>();
  std::sort(sorted.begin(), sorted.end());
  auto at = [&](double p) { return sorted.empty() ? 0.0 : sorted[static_cast<size_t>(p * (sorted.size() - 1))]; };
  Tensor xf = x.Detach().To(DType::kF32), err = Sub(xf, y.Detach().To(DType::kF32));
  double signal = Sum(Square(xf)).item<float>(), noise = Sum(Square(err)).item<float>();
  // Clipped: further from the value than half a step, which rounding never is.
  double half = 0.5 * Max(scale).item<float>() * (1 + 1e-6);
  stats_ = {Mean(Gt(Abs(err), half).To(DType::kF32)).item<float>(),
            noise > 0 ? 10 * std::log10(signal / noise) : INFINITY, at(0.5), at(0.99), sorted.empty() ? 0.0 : sorted.back(),
            true};
}

void FakeQuant::SetBits(int bits) {
  QUANTA_CHECK(bits >= 2 && bits <= 8, "FakeQuant: bits ", bits, " outside [2, 8]");
  spec_.bits = bits;
  observer_->SetSpec(spec_);
  observer_->Reset();
}

LsqQuantizer::LsqQuantizer(const QuantSpec& spec, int64_t channels, bool activation)
    : Quantizer(spec), activation_(activation) {
  QUANTA_CHECK(channels >= 1 && (spec.per_channel || channels == 1), "LsqQuantizer: ", channels,
               " step sizes for a ", spec.ToString(), " spec");
  scale = Ones({channels});
  offset = Zeros({channels});
  initialized = Zeros({1});
  RegisterParameter("scale", &scale);
  if (!spec.symmetric) {
    RegisterParameter("offset", &offset);
  } else {
    RegisterBuffer("offset", &offset);
  }
  RegisterBuffer("initialized", &initialized);
}

void LsqQuantizer::Initialize(const Tensor& x_in) {
  NoGradGuard no_grad;
  Tensor x = x_in.Detach().To(DType::kF32);
  double qp = static_cast<double>(spec_.quant_max());
  Tensor init;
  if (spec_.per_channel) {
    std::vector<int64_t> dims;
    for (int d = 0; d < x.dim(); ++d) {
      if (d != spec_.axis) dims.push_back(d);
    }
    init = Mul(Mean(Abs(x), dims), 2.0 / std::sqrt(qp));
  } else {
    init = Mul(Mean(Abs(x)), 2.0 / std::sqrt(qp)).View({1});
  }
  QUANTA_CHECK(init.shape() == scale.shape(), "LsqQuantizer: ", scale.numel(), " step sizes for ", x.Describe());
  if (!spec_.symmetric) {
    // LSQ+ (Bhalgat et al. 2020) starts affine quantizers from the observed range,
    // so that a one-sided input (after ReLU) gets every level.
    MinMaxObserver range(spec_);
    range.Observe(x);
    auto [s, z] = range.Params();
    init = s;
    offset.CopyFrom(z);
  }
  scale.CopyFrom(Maximum(init, 1e-6));  // in place: optimizers hold this tensor
  FillInplace(initialized, 1);
}

std::pair<Tensor, Tensor> LsqQuantizer::Params() const {
  NoGradGuard no_grad;
  return {Maximum(scale.Detach(), 1e-8), spec_.symmetric ? offset.Detach() : Round(offset.Detach())};
}

Tensor LsqQuantizer::Forward(const Tensor& x) {
  if (initialized.item<float>() == 0) Initialize(x);
  if (!enabled_) return x;
  FakeQuantOptions o = Options();
  // N: values per step size; an activation's batch is not counted (N_F).
  double values = static_cast<double>(x.numel());
  if (activation_ && x.dim() > 1) values /= static_cast<double>(x.size(0));
  double per_step = values / static_cast<double>(scale.numel());
  o.lsq_grad_scale = 1.0 / std::sqrt(per_step * static_cast<double>(spec_.quant_max()));
  // Note [LSQ+ offsets on the integer grid]: round in the forward pass, pass the gradient straight through.
  Tensor zero_point = spec_.symmetric ? offset : Add(offset, Sub(Round(offset), offset).Detach());
  Tensor step = Maximum(scale, 1e-8);
  Tensor y = FakeQuantize(x, step, zero_point, o);
  Record(x, y, step);
  return y;
}

void LsqQuantizer::SetBits(int bits) {
  QUANTA_CHECK(bits >= 2 && bits <= 8, "LsqQuantizer: bits ", bits, " outside [2, 8]");
  spec_.bits = bits;
  NoGradGuard no_grad;
  FillInplace(initialized, 0);  // re-initialize the step from the next batch
}

}  // namespace quanta::quant
