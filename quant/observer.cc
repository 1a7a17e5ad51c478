// Observers: range tracking and the range -> (scale, zero point) rule.
#include "quant/observer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/error.h"
#include "core/grad_mode.h"
#include "core/ops.h"

namespace quanta::quant {

int64_t QuantSpec::quant_min() const {
  if (!is_signed) return 0;
  return symmetric ? -(int64_t{1} << (bits - 1)) + 1 : -(int64_t{1} << (bits - 1));
}
int64_t QuantSpec::quant_max() const { return is_signed ? (int64_t{1} << (bits - 1)) - 1 : (int64_t{1} << bits) - 1; }

std::string QuantSpec::ToString() const {
  return absl::StrCat(bits, "-bit ", is_signed ? "" : "unsigned ", symmetric ? "symmetric" : "affine",
                      per_channel ? absl::StrCat(" per-channel(", axis, ")") : " per-tensor");
}

std::pair<Tensor, Tensor> ParamsForRange(const Tensor& lo_in, const Tensor& hi_in, const QuantSpec& spec) {
  // Tensor ops on the observer's device: no host round trip in the training step.
  NoGradGuard no_grad;
  Tensor zero = Scalar(0);
  Tensor lo = Minimum(lo_in, zero), hi = Maximum(hi_in, zero);  // the range always holds 0
  double qmin = static_cast<double>(spec.quant_min()), qmax = static_cast<double>(spec.quant_max());
  Tensor scale, zp;
  if (spec.symmetric) {
    scale = Div(Maximum(Abs(lo), Abs(hi)), qmax);  // signed: qmax = 2^(b-1) - 1; unsigned: 2^b - 1 (lo is then 0)
    zp = ZerosLike(scale);
  } else {
    scale = Maximum(Div(Sub(hi, lo), qmax - qmin), 1e-8);
    zp = Clamp(Sub(Scalar(qmin), Round(Div(lo, scale))), qmin, qmax);  // Round: ties to even
  }
  return {Maximum(scale, 1e-8), zp};
}

RangeParams ParamsForRange(float lo, float hi, const QuantSpec& spec) {
  auto [scale, zp] = ParamsForRange(Tensor::FromVector<float>({lo}, {1}), Tensor::FromVector<float>({hi}, {1}), spec);
  return {scale.item<float>(), static_cast<int64_t>(zp.item<float>())};
}

Observer::Observer(const QuantSpec& spec) : spec_(spec) {
  QUANTA_CHECK(spec.bits >= 2 && spec.bits <= 8, "observer: bits ", spec.bits, " outside [2, 8]");
  min_val_ = Zeros({1});
  max_val_ = Zeros({1});
  observed_ = Zeros({1});
  // One value, or one per channel once per-channel data has been seen.
  RegisterBuffer("min_val", &min_val_, /*resizable=*/true);
  RegisterBuffer("max_val", &max_val_, /*resizable=*/true);
  RegisterBuffer("observed", &observed_);
}

void Observer::Reset() {
  NoGradGuard no_grad;
  FillInplace(observed_, 0);
}

std::pair<Tensor, Tensor> Observer::Range() const { return {min_val_, max_val_}; }

std::pair<Tensor, Tensor> Observer::Params() const {
  QUANTA_CHECK(observed(), "observer: no tensor observed yet (", spec_.ToString(), ")");
  auto [lo, hi] = Range();
  return ParamsForRange(lo, hi, spec_);
}

std::pair<Tensor, Tensor> Observer::BatchRange(const Tensor& x_in) const {
  Tensor x = x_in.Detach().To(DType::kF32);
  if (!spec_.per_channel) return {Min(x).View({1}), Max(x).View({1})};
  QUANTA_CHECK(spec_.axis < x.dim(), "observer: axis ", spec_.axis, " out of range for ", x.Describe());
  std::vector<int64_t> dims;
  for (int d = 0; d < x.dim(); ++d) {
    if (d != spec_.axis) dims.push_back(d);
  }
  return {Min(x, dims), Max(x, dims)};
}

void Observer::UpdateRange(const Tensor& lo, const Tensor& hi, std::optional<double> decay) {
  NoGradGuard no_grad;
  if (!observed() || min_val_.shape() != lo.shape()) {
    min_val_ = lo.Clone();
    max_val_ = hi.Clone();
  } else if (!decay) {
    min_val_.CopyFrom(Minimum(min_val_, lo));
    max_val_.CopyFrom(Maximum(max_val_, hi));
  } else {
    min_val_.CopyFrom(Add(Mul(min_val_, *decay), Mul(lo, 1 - *decay)));
    max_val_.CopyFrom(Add(Mul(max_val_, *decay), Mul(hi, 1 - *decay)));
  }
  FillInplace(observed_, 1);
}

void MinMaxObserver::Observe(const Tensor& x) {
  auto [lo, hi] = BatchRange(x);
  UpdateRange(lo, hi, std::nullopt);
}

void EmaMinMaxObserver::Observe(const Tensor& x) {
  auto [lo, hi] = BatchRange(x);
  UpdateRange(lo, hi, decay_);
}

EmaAbsMaxObserver::EmaAbsMaxObserver(const QuantSpec& spec, double decay) : Observer(spec), decay_(decay) {
  QUANTA_CHECK(spec.symmetric, "EmaAbsMaxObserver: ", spec.ToString(), " is not symmetric (EmaMinMaxObserver is for affine specs)");
  QUANTA_CHECK(decay >= 0 && decay < 1, "EmaAbsMaxObserver: decay ", decay, " outside [0, 1)");
}

void EmaAbsMaxObserver::Observe(const Tensor& x) {
  NoGradGuard no_grad;
  auto [lo, hi] = BatchRange(x);
  Tensor amax = Maximum(Abs(lo), Abs(hi));
  if (observed() && max_val_.shape() == amax.shape()) amax = Add(Mul(max_val_, decay_), Mul(amax, 1 - decay_));
  max_val_ = amax.Clone();
  min_val_ = spec_.is_signed ? Neg(amax) : ZerosLike(amax);
  FillInplace(observed_, 1);
}

PercentileObserver::PercentileObserver(const QuantSpec& spec, double percentile, int bins)
    : Observer(spec), percentile_(percentile), bins_(bins) {
  QUANTA_CHECK(!spec.per_channel, "PercentileObserver: per tensor only");
  QUANTA_CHECK(percentile > 50 && percentile <= 100 && bins >= 16, "PercentileObserver: bad percentile ",
               percentile, " or bins ", bins);
  histogram_ = Zeros({bins}, DType::kF64);
  RegisterBuffer("histogram", &histogram_);
}

void PercentileObserver::Reset() {
  Observer::Reset();
  NoGradGuard no_grad;
  FillInplace(histogram_, 0);
}

void PercentileObserver::Observe(const Tensor& x_in) {
  NoGradGuard no_grad;
  std::vector<float> x = x_in.Detach().To(DType::kF32).Contiguous().ToVector<float>();
  auto [lo, hi] = BatchRange(x_in);
  double old_top = observed() ? std::max(std::abs(min_val_.item<float>()), std::abs(max_val_.item<float>())) : 0;
  UpdateRange(lo, hi, std::nullopt);
  double top = std::max(std::abs(min_val_.item<float>()), std::abs(max_val_.item<float>()));
  if (top <= 0) return;
  // Histogram of |x| over [0, top]; a grown range re-bins the old counts.
  std::vector<double> h = histogram_.ToVector<double>(), nh(bins_, 0.0);
  for (int i = 0; i < bins_ && old_top > 0; ++i) {
    double center = (i + 0.5) * old_top / bins_;
    nh[std::min(bins_ - 1, static_cast<int>(center / top * bins_))] += h[i];
  }
  for (float v : x) nh[std::min(bins_ - 1, static_cast<int>(std::abs(v) / top * bins_))] += 1;
  histogram_.CopyFrom(Tensor::FromVector<double>(nh, {bins_}));
}

std::pair<Tensor, Tensor> PercentileObserver::Range() const {
  std::vector<double> h = histogram_.ToVector<double>();
  double total = 0;
  for (double v : h) total += v;
  double top = std::max(std::abs(min_val_.item<float>()), std::abs(max_val_.item<float>()));
  double want = total * percentile_ / 100, run = 0, t = top;
  for (int i = 0; i < bins_; ++i) {
    run += h[i];
    if (run >= want) {
      t = (i + 1) * top / bins_;
      break;
    }
  }
  Tensor lo = Maximum(min_val_, Scalar(-t)), hi = Minimum(max_val_, Scalar(t));
  return {lo, hi};
}

void MseObserver::Observe(const Tensor& x) {
  auto [lo, hi] = BatchRange(x);
  UpdateRange(lo, hi, std::nullopt);
  last_ = x.Detach().To(DType::kF32).Contiguous();
  searched_.reset();
}

std::pair<Tensor, Tensor> MseObserver::Range() const {
  if (!last_.defined()) return {min_val_, max_val_};
  NoGradGuard no_grad;
  std::vector<float> key_lo = min_val_.To(DType::kF32).ToVector<float>(), key_hi = max_val_.To(DType::kF32).ToVector<float>();
  if (searched_ && searched_->lo == key_lo && searched_->hi == key_hi && searched_->spec == spec_.ToString() &&
      searched_->device == min_val_.device()) {
    return searched_->range;
  }
  ++searches_;
  std::vector<int64_t> dims;
  for (int d = 0; d < last_.dim(); ++d) {
    if (!spec_.per_channel || d != spec_.axis) dims.push_back(d);
  }
  int64_t channels = min_val_.numel();
  std::vector<double> best_err(channels, INFINITY), best_frac(channels, 1.0);
  for (int step = 0; step <= 70; ++step) {
    double frac = 1.0 - 0.01 * step;
    auto [scale, zp] = ParamsForRange(Mul(min_val_, frac), Mul(max_val_, frac), spec_);
    FakeQuantOptions o{.quant_min = spec_.quant_min(), .quant_max = spec_.quant_max(),
                       .axis = spec_.per_channel ? spec_.axis : -1};
    Tensor err = Mean(Square(Sub(FakeQuantize(last_, scale, zp, o), last_)), dims);
    std::vector<float> e = err.Reshape({channels}).ToVector<float>();
    for (int64_t c = 0; c < channels; ++c) {
      if (e[c] < best_err[c]) best_err[c] = e[c], best_frac[c] = frac;
    }
  }
  Tensor frac = Tensor::FromVector<double>(best_frac, {channels}).To(DType::kF32).To(min_val_.device());
  std::pair<Tensor, Tensor> range = {Mul(min_val_, frac), Mul(max_val_, frac)};
  searched_ = Searched{key_lo, key_hi, spec_.ToString(), min_val_.device(), range};
  return range;
}

std::shared_ptr<Observer> MakeObserver(ObserverKind kind, const QuantSpec& spec, double ema_decay) {
  switch (kind) {
    case ObserverKind::kMinMax: return std::make_shared<MinMaxObserver>(spec);
    case ObserverKind::kEmaMinMax: return std::make_shared<EmaMinMaxObserver>(spec, ema_decay);
    case ObserverKind::kEmaAbsMax: return std::make_shared<EmaAbsMaxObserver>(spec, ema_decay);
    case ObserverKind::kPercentile: return std::make_shared<PercentileObserver>(spec);
    case ObserverKind::kMse: return std::make_shared<MseObserver>(spec);
  }
  return nullptr;
}

}  // namespace quanta::quant
