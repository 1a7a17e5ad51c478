// FakeQuant and LSQ: the glue between observers or learned steps and
// fake_quantize; APoT's codebook projection; the integer form of a weight.
#include "quant/quantizer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_join.h"
#include "autograd/autograd.h"
#include "core/error.h"
#include "core/grad_mode.h"
#include "core/quant_params.h"

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
  // The order statistics the report prints, by selection (O(n)) rather than a
  // full sort: `bench_infer --only=resnet20_b64 --profile=int8 --runs=30`
  // (build, calibrate, convert, 31 batches) took 1.90 s with the sort, 0.97 s
  // without (Zen 4, 1 thread); the sort was 41% of its perf samples.
  std::vector<float> v = Abs(x.Detach()).To(DType::kF32).ToVector<float>();
  auto at = [&](double p) -> double {
    if (v.empty()) return 0.0;
    auto k = v.begin() + static_cast<std::ptrdiff_t>(p * static_cast<double>(v.size() - 1));
    std::nth_element(v.begin(), k, v.end());
    return *k;
  };
  Tensor xf = x.Detach().To(DType::kF32), err = Sub(xf, y.Detach().To(DType::kF32));
  double signal = Sum(Square(xf)).item<float>(), noise = Sum(Square(err)).item<float>();
  // Clipped: further from the value than half a step, which rounding never is.
  double half = 0.5 * Max(scale).item<float>() * (1 + 1e-6);
  double p50 = at(0.5), p99 = at(0.99), max = v.empty() ? 0.0 : *std::max_element(v.begin(), v.end());
  stats_ = {Mean(Gt(Abs(err), half).To(DType::kF32)).item<float>(),
            noise > 0 ? 10 * std::log10(signal / noise) : INFINITY, p50, p99, max, true};
}

void FakeQuant::SetBits(int bits) {
  QUANTA_CHECK(bits >= 2 && bits <= 8, "FakeQuant: bits ", bits, " outside [2, 8]");
  spec_.bits = bits;
  observer_->SetSpec(spec_);
  observer_->Reset();
}

LsqQuantizer::LsqQuantizer(const QuantSpec& spec, int64_t channels, bool activation, LsqInit init)
    : Quantizer(spec), activation_(activation), init_(init) {
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
  if (init_ == LsqInit::kMse) {
    auto mse = MakeObserver(ObserverKind::kMse, spec_);
    mse->Observe(x);
    auto [s, z] = mse->Params();
    QUANTA_CHECK(s.shape() == scale.shape(), "LsqQuantizer: ", scale.numel(), " step sizes for ", x.Describe());
    scale.CopyFrom(Maximum(s, 1e-6));  // in place: optimizers hold these tensors
    if (!spec_.symmetric) offset.CopyFrom(z);
    FillInplace(initialized, 1);
    return;
  }
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

namespace {
// The step LSQ quantizes with, in training and in conversion alike: Note [LSQ
// steps through zero].
Tensor LsqStep(const Tensor& scale) { return Maximum(Abs(scale), 1e-8); }
}  // namespace

std::pair<Tensor, Tensor> LsqQuantizer::Params() const {
  NoGradGuard no_grad;
  return {LsqStep(scale.Detach()), spec_.symmetric ? offset.Detach() : Round(offset.Detach())};
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
  // Note [LSQ steps through zero]: the step is |scale|. An SGD update larger
  // than a step size (momentum on a layer with few weights per step: the first
  // convolution's 9 per output channel) can carry the parameter below zero; as
  // max(scale, eps) that froze the channel at a step of eps (every weight
  // clipped to 0, the gradient gone to the constant) for good. Measured while
  // reworking tests/quant/convert_fmnist_test (W8A8, 60 steps at lr 0.01 from a
  // 150-step f32 model): a first-layer step reached -0.0045 within 30 steps and
  // top-1 fell from 71% to 21%. Fine-tuning the long recipe's f32 model at W4A4
  // (one epoch, //apps:train), one of conv1's 32 steps ended below zero.
  // PyTorch's _LearnableFakeQuantize clamps the parameter in place instead.
  Tensor step = LsqStep(scale);
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

Quantizer::WeightGrid Quantizer::Grid(const Tensor& w_in) const {
  NoGradGuard no_grad;
  Tensor w = w_in.Detach().To(Device::Cpu()).To(DType::kF32).Contiguous();
  int64_t O = w.dim() > 0 ? w.size(0) : 1;
  std::vector<float> s = Params().first.ToVector<float>();
  QUANTA_CHECK(s.size() == 1 || static_cast<int64_t>(s.size()) == O, "quantizer: ", s.size(), " weight scales for ",
               w.Describe());
  WeightGrid g{.qmin = spec_.quant_min(), .qmax = spec_.quant_max()};
  g.scales.resize(O);
  for (int64_t o = 0; o < O; ++o) g.scales[o] = s[s.size() == 1 ? 0 : o];
  QuantParams p = QuantParams::PerChannel(g.scales, std::vector<int64_t>(O, 0), 0).WithRange(g.qmin, g.qmax);
  g.codes = Quantize(w, DType::kQInt8, p).IntRepr();
  // Clipped: beyond the outermost levels by more than half a step.
  std::vector<float> v = w.ToVector<float>();
  int64_t per = static_cast<int64_t>(v.size()) / std::max<int64_t>(O, 1), clipped = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    double sc = g.scales[per > 0 ? i / per : 0];
    clipped += std::abs(v[i]) > sc * (static_cast<double>(g.qmax) + 0.5);
  }
  g.clip = v.empty() ? 0 : static_cast<double>(clipped) / static_cast<double>(v.size());
  return g;
}

// ---- APoT -------------------------------------------------------------------

namespace {

QuantSpec ApotSpec(int bits, int64_t channels) {
  return {.bits = bits, .is_signed = true, .symmetric = true, .per_channel = channels > 1, .axis = 0};
}

// The paper's sets of powers of two (with 0) whose sums give b bits of levels,
// in units of the finest power: each a member of the first set plus one of the
// second.
std::vector<int32_t> ApotCodes(int bits) {
  QUANTA_CHECK(bits >= 2 && bits <= 5, "ApotQuantizer: bits ", bits, " outside [2, 5]");
  std::vector<int32_t> first, second;
  switch (bits) {
    case 2: first = {0, 1}, second = {0}; break;                // 1 bit of magnitude: {0, 1}
    case 3: first = {0, 1, 2, 4}, second = {0}; break;          // 2^-3 .. 2^-1 in units of 2^-3
    case 4: first = {0, 1, 4, 8}, second = {0, 2}; break;       // {0, 2^-4, 2^-2, 2^-1} + {0, 2^-3}
    case 5: first = {0, 2, 8, 32}, second = {0, 1, 4, 16}; break;  // {0, 2^-5, 2^-3, 2^-1} + {0, 2^-6, 2^-4, 2^-2}
    default: break;
  }
  std::vector<int32_t> codes;
  for (int32_t a : first) {
    for (int32_t b : second) codes.push_back(a + b);
  }
  std::sort(codes.begin(), codes.end());
  codes.erase(std::unique(codes.begin(), codes.end()), codes.end());
  return codes;
}

// The nearest of `levels` (ascending, non-negative codes over M) to |x| * M for
// x in [-1, 1], with x's sign; a tie goes to the smaller magnitude.
int32_t NearestCode(double x, const std::vector<int32_t>& levels) {
  double m = std::min(std::abs(x), 1.0) * levels.back();
  auto hi = std::lower_bound(levels.begin(), levels.end(), m, [](int32_t l, double v) { return l < v; });
  int32_t c = hi == levels.end() ? levels.back() : *hi;
  if (hi != levels.begin() && (hi == levels.end() || m - *(hi - 1) <= *hi - m)) c = *(hi - 1);
  return x < 0 ? -c : c;
}

// A weight as rows (one per threshold: the whole tensor, or one per output
// channel), each with its mean and standard deviation.
struct Normalized {
  std::vector<float> w;  // the weight, f32, row-major
  int64_t rows = 1, per = 0;  // per: values in a row
  std::vector<double> mean, std;
  float at(int64_t r, int64_t i) const { return w[static_cast<size_t>(r * per + i)]; }
};

Normalized Normalize(const Tensor& w_in, int64_t rows) {
  NoGradGuard no_grad;
  Normalized n;
  n.w = w_in.Detach().To(Device::Cpu()).To(DType::kF32).Contiguous().ToVector<float>();
  QUANTA_CHECK(rows == 1 || (w_in.dim() > 0 && w_in.size(0) == rows), "ApotQuantizer: ", rows,
               " clipping thresholds (one per output channel) for ", w_in.Describe());
  n.rows = rows;
  n.per = static_cast<int64_t>(n.w.size()) / rows;
  n.mean.assign(rows, 0);
  n.std.assign(rows, 1);
  for (int64_t r = 0; r < rows; ++r) {
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < n.per; ++i) sum += n.at(r, i);
    double mean = n.per > 0 ? sum / static_cast<double>(n.per) : 0;
    for (int64_t i = 0; i < n.per; ++i) sq += (n.at(r, i) - mean) * (n.at(r, i) - mean);
    // The unbiased estimate, as the paper's weight.std(); a constant row gets 1.
    double std = n.per > 1 ? std::sqrt(sq / static_cast<double>(n.per - 1)) : 0;
    n.mean[r] = mean;
    n.std[r] = std > 0 ? std : 1;
  }
  return n;
}

// The steps std alpha / M as f32 arithmetic gives them, one per row: Forward
// multiplies the codes by these values, and the integer model stores them.
std::vector<float> ApotSteps(const Tensor& alpha, const std::vector<double>& std, int32_t M) {
  std::vector<float> a = alpha.Detach().To(Device::Cpu()).ToVector<float>();
  QUANTA_CHECK(a.size() == std.size(), "ApotQuantizer: ", a.size(), " clipping thresholds for ", std.size(), " rows");
  std::vector<float> steps(a.size());
  for (size_t r = 0; r < a.size(); ++r) steps[r] = std::max(a[r], 1e-6f) * static_cast<float>(std[r] / M);
  return steps;
}

// w's codes under the rows' steps (x = (w - mean) / (step M), the nearest level
// of clamp(x)), x itself where |x| <= 1 (0 elsewhere, for alpha's gradient), and
// how many |x| exceed 1. Forward and Grid share it, so training and the integer
// model take the same codes.
struct Projection {
  std::vector<int32_t> codes;
  std::vector<float> inside;
  int64_t clipped = 0;
};
Projection Project(const Normalized& n, const std::vector<float>& steps, const std::vector<int32_t>& levels) {
  Projection p{.codes = std::vector<int32_t>(n.w.size()), .inside = std::vector<float>(n.w.size())};
  for (int64_t r = 0; r < n.rows; ++r) {
    const double range = static_cast<double>(steps[r]) * levels.back();
    for (int64_t i = 0; i < n.per; ++i) {
      size_t k = static_cast<size_t>(r * n.per + i);
      double x = (n.w[k] - n.mean[r]) / range;
      p.codes[k] = NearestCode(x, levels);
      bool in = std::abs(x) <= 1;
      p.inside[k] = in ? static_cast<float>(x) : 0.f;
      p.clipped += !in;
    }
  }
  return p;
}

// The shape that broadcasts one value per row against w: (C, 1, ..., 1), or (1).
std::vector<int64_t> RowShape(const Tensor& w, int64_t rows) {
  if (rows == 1) return {1};
  std::vector<int64_t> shape(static_cast<size_t>(w.dim()), 1);
  shape[0] = rows;
  return shape;
}

}  // namespace

std::vector<int32_t> ApotQuantizer::Levels(int bits) { return ApotCodes(bits); }

ApotQuantizer::ApotQuantizer(int bits, int64_t channels)
    : Quantizer(ApotSpec(bits, channels)), levels_(ApotCodes(bits)) {
  QUANTA_CHECK(channels >= 1, "ApotQuantizer: ", channels, " clipping thresholds");
  alpha = Full({channels}, 3.0);
  initialized = Zeros({1});
  last_std = Ones({channels});
  RegisterParameter("alpha", &alpha);
  RegisterBuffer("initialized", &initialized);
  RegisterBuffer("last_std", &last_std);
}

void ApotQuantizer::Initialize(const Tensor& w) {
  Normalized n = Normalize(w, alpha.numel());
  std::vector<float> start(n.rows);
  for (int64_t r = 0; r < n.rows; ++r) {
    double best = 3.0, best_err = INFINITY;
    for (int i = 0; i <= 100; ++i) {
      double a = 1.0 + 0.05 * i, err = 0, step = a / levels_.back();
      for (int64_t k = 0; k < n.per; ++k) {
        double x = (n.at(r, k) - n.mean[r]) / n.std[r];
        double e = NearestCode(x / a, levels_) * step - x;
        err += e * e;
      }
      if (err < best_err) best_err = err, best = a;
    }
    start[r] = static_cast<float>(best);
  }
  NoGradGuard no_grad;
  alpha.CopyFrom(Tensor::FromVector(start, alpha.shape()));  // in place: optimizers hold this tensor
  FillInplace(initialized, 1);
}

Tensor ApotQuantizer::Forward(const Tensor& w) {
  if (initialized.item<float>() == 0) Initialize(w);
  if (!enabled_) return w;
  const int64_t rows = alpha.numel();
  Normalized n = Normalize(w, rows);
  const int32_t M = levels_.back();
  std::vector<float> steps = ApotSteps(alpha, n.std, M);
  std::vector<float> std_f(n.std.begin(), n.std.end());
  {
    NoGradGuard no_grad;
    last_std.CopyFrom(Tensor::FromVector(std_f, last_std.shape()));
  }
  // The codes of P(clamp(x)), and x where |x| <= 1, as constants.
  Projection p = Project(n, steps, levels_);
  std::vector<float> codes(p.codes.begin(), p.codes.end());
  auto constant = [&](const std::vector<float>& v, const std::vector<int64_t>& shape) {
    return Tensor::FromVector(v, shape).To(w.device()).To(w.dtype());
  };
  const std::vector<int64_t> row_shape = RowShape(w, rows);
  Tensor ct = constant(codes, w.shape()), xt = constant(p.inside, w.shape()), sd = constant(std_f, row_shape);
  Tensor a = Maximum(alpha, 1e-6).To(w.device()).To(w.dtype()).View(row_shape);
  // Value codes * step. d/dw = 1; d/dalpha = std (P(x) - x) inside, std sign(x) outside, per row.
  Tensor y = Mul(ct, Mul(Mul(a, sd), 1.0 / M));
  y = Add(y, Sub(w, w.Detach()));
  y = Sub(y, Mul(Mul(xt, Sub(a, a.Detach())), sd));
  Record(w, y, Tensor::FromVector(steps, {rows}));
  return y;
}

std::pair<Tensor, Tensor> ApotQuantizer::Params() const {
  NoGradGuard no_grad;
  std::vector<float> s = last_std.ToVector<float>();
  std::vector<float> steps = ApotSteps(alpha, std::vector<double>(s.begin(), s.end()), levels_.back());
  return {Tensor::FromVector(steps, {alpha.numel()}), Zeros({alpha.numel()})};
}

Quantizer::WeightGrid ApotQuantizer::Grid(const Tensor& w) const {
  QUANTA_CHECK(ready(), "ApotQuantizer: no clipping threshold yet for ", w.Describe(), " (train or run it once first)");
  Normalized n = Normalize(w, alpha.numel());
  const int32_t M = levels_.back();
  std::vector<float> steps = ApotSteps(alpha, n.std, M);
  Projection p = Project(n, steps, levels_);
  WeightGrid g{.codes = std::move(p.codes), .qmin = -M, .qmax = M};
  const int64_t O = w.dim() > 0 ? w.size(0) : 1;
  g.scales.resize(O);
  for (int64_t o = 0; o < O; ++o) g.scales[o] = steps[n.rows == 1 ? 0 : o];
  g.clip = n.w.empty() ? 0 : static_cast<double>(p.clipped) / static_cast<double>(n.w.size());
  return g;
}

void ApotQuantizer::SetBits(int bits) {
  levels_ = ApotCodes(bits);
  spec_ = ApotSpec(bits, alpha.numel());
  NoGradGuard no_grad;
  FillInplace(initialized, 0);  // search alpha again on the next weights
}

// ---- block formats (Note [Block formats in policies]) ------------------------

namespace {

struct NamedFormat {
  const char* name;
  BlockFormat format;
};
const NamedFormat kNamedFormats[] = {
    {"mxfp8", BlockFormat::Mx(DType::kF8E4M3)}, {"mxfp8_e5m2", BlockFormat::Mx(DType::kF8E5M2)},
    {"mxfp6", BlockFormat::Mx(DType::kF6E2M3)}, {"mxfp6_e3m2", BlockFormat::Mx(DType::kF6E3M2)},
    {"mxfp4", BlockFormat::Mx(DType::kF4E2M1)}, {"nvfp4", BlockFormat::Nvfp4()},
};

// Zero-pads dim d of x up to a multiple of m.
Tensor PadTo(const Tensor& x, int d, int64_t m) {
  int64_t n = x.size(d), padded = (n + m - 1) / m * m;
  if (padded == n) return x;
  Shape zeros = x.shape();
  zeros[d] = padded - n;
  return Concat({x, Zeros(zeros, x.dtype(), x.device())}, d);
}

// w (O, ...) as the (O, rest) matrix padded to whole blocks of `format`.
Tensor PaddedWeightMatrix(const Tensor& w, const BlockFormat& format) {
  QUANTA_CHECK(w.dim() >= 2, "block quantization: weight ", w.Describe(), " is not a matrix or a convolution kernel");
  const int64_t out = w.size(0), rest = w.numel() / std::max<int64_t>(out, 1);
  return PadTo(PadTo(w.Reshape({out, rest}), 0, format.rows), 1, format.cols);
}

}  // namespace

std::optional<BlockFormat> BlockFormatFromName(std::string_view name) {
  for (const NamedFormat& f : kNamedFormats) {
    if (name == f.name) return f.format;
  }
  return std::nullopt;
}

std::string BlockFormatName(const BlockFormat& format) {
  for (const NamedFormat& f : kNamedFormats) {
    if (format == f.format) return f.name;
  }
  return format.ToString();
}

std::string BlockFormatNames() {
  std::vector<std::string> names;
  for (const NamedFormat& f : kNamedFormats) names.push_back(f.name);
  return absl::StrJoin(names, ", ");
}

int BlockElementBits(const BlockFormat& format) { return Info(format.element).bits; }

Tensor BlockFakeQuantizeAlong(const Tensor& x, int64_t dim, const BlockFormat& format) {
  const int d = static_cast<int>(dim < 0 ? dim + x.dim() : dim);
  QUANTA_CHECK(d >= 0 && d < x.dim() && format.rows == 1, "block quantization: dim ", dim, " of ", x.Describe(),
               " in ", format.ToString(), " (groups along one dim are 1 x B)");
  // The grouped dim last, everything else as rows.
  std::vector<int64_t> perm;
  for (int k = 0; k < x.dim(); ++k) {
    if (k != d) perm.push_back(k);
  }
  perm.push_back(d);
  const bool moved_dim = d != x.dim() - 1;
  Tensor moved = moved_dim ? x.Permute(perm) : x;
  const int64_t k = x.size(d);
  Tensor rows = moved.Reshape({x.numel() / std::max<int64_t>(k, 1), k});
  BlockFormat f = format;
  f.cols = std::min(format.cols, k);  // a dim shorter than a group is one padded group
  if (f.scale != DType::kF32) f.cols = format.cols;  // MX and NVFP4 blocks have their fixed size
  Tensor q = BlockFakeQuantize(PadTo(rows, 1, f.cols), f);
  if (q.size(1) != k) q = q.Narrow(1, 0, k);
  q = q.Reshape(moved.shape());
  if (!moved_dim) return q;
  std::vector<int64_t> inverse(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) inverse[perm[i]] = static_cast<int64_t>(i);
  return q.Permute(inverse);
}

int64_t LayerReductionDim(const Tensor& x) { return x.dim() == 4 ? 1 : x.dim() - 1; }

Tensor BlockFakeQuantizeActivation(const Tensor& x, const BlockFormat& format) {
  const int64_t dim = LayerReductionDim(x);
  if (format.scale != DType::kF8E4M3 || x.dim() < 2 || x.size(0) == 1) return BlockFakeQuantizeAlong(x, dim, format);
  std::vector<Tensor> samples;
  for (int64_t i = 0; i < x.size(0); ++i) samples.push_back(BlockFakeQuantizeAlong(x.Narrow(0, i, 1), dim, format));
  return Concat(samples, 0);
}

Tensor BlockFakeQuantizeWeight(const Tensor& w, const BlockFormat& format) {
  const int64_t out = w.size(0), rest = w.numel() / std::max<int64_t>(out, 1);
  Tensor q = BlockFakeQuantize(PaddedWeightMatrix(w, format), format);
  if (q.size(0) != out) q = q.Narrow(0, 0, out);
  if (q.size(1) != rest) q = q.Narrow(1, 0, rest);
  return q.Reshape(w.shape());
}

BlockQuantized BlockQuantizeWeight(const Tensor& w, const BlockFormat& format) {
  return BlockQuantize(PaddedWeightMatrix(w.Detach(), format), format);
}

Tensor BlockDequantizeWeight(const BlockQuantized& q, const Shape& shape) {
  QUANTA_CHECK(!shape.empty() && q.codes.dim() == 2, "block quantization: codes ", q.codes.Describe(),
               " are not a weight matrix");
  int64_t out = shape[0], numel = 1;
  for (int64_t s : shape) numel *= s;
  const int64_t rest = numel / std::max<int64_t>(out, 1);
  QUANTA_CHECK(q.codes.size(0) >= out && q.codes.size(1) >= rest && q.codes.size(0) - out < q.format.rows &&
                   q.codes.size(1) - rest < q.format.cols,
               "block quantization: codes ", q.codes.Describe(), " do not hold a weight of shape [",
               absl::StrJoin(shape, ", "), "] in ", q.format.ToString(), " blocks");
  Tensor m = BlockDequantize(q);
  if (m.size(0) != out) m = m.Narrow(0, 0, out);
  if (m.size(1) != rest) m = m.Narrow(1, 0, rest);
  return m.Contiguous().Reshape(shape);
}

int64_t BlockWeightBytes(const Shape& shape, const BlockFormat& format) {
  int64_t out = shape.empty() ? 1 : shape[0], numel = 1;
  for (int64_t s : shape) numel *= s;
  const int64_t rest = numel / std::max<int64_t>(out, 1);
  const int64_t rows = (out + format.rows - 1) / format.rows, cols = (rest + format.cols - 1) / format.cols;
  return StorageBytes(format.element, rows * format.rows * cols * format.cols) + StorageBytes(format.scale, rows * cols) +
         (format.scale == DType::kF8E4M3 ? 4 : 0);
}

BlockQuantizer::BlockQuantizer(const BlockFormat& format, bool weight)
    : Quantizer(QuantSpec{.bits = BlockElementBits(format), .is_signed = true, .symmetric = true}),
      format_(format),
      weight_(weight) {}

Tensor BlockQuantizer::Forward(const Tensor& x) {
  if (!enabled_) return x;
  // An activation's reduction dim: a convolution's channels, a Linear's last dim.
  Tensor y = weight_ ? BlockFakeQuantizeWeight(x, format_) : BlockFakeQuantizeActivation(x, format_);
  if (recording_) last_output_ = y.Detach();
  return y;
}

void BlockQuantizer::SetBits(int bits) {
  QUANTA_CHECK(false, "BlockQuantizer: ", BlockFormatName(format_), " has no bit width to set to ", bits,
               " (progressive bits apply to integer formats)");
}

std::pair<Tensor, Tensor> BlockQuantizer::Params() const {
  return {Tensor::FromVector(std::vector<float>{1.f}, {1}), Tensor::FromVector(std::vector<float>{0.f}, {1})};
}

Quantizer::WeightGrid BlockQuantizer::Grid(const Tensor&) const {
  QUANTA_CHECK(false, "BlockQuantizer: ", BlockFormatName(format_),
               " weights have no integer grid; Convert stores their blocks (BlockQuantizeWeight)");
  return {};
}

}  // namespace quanta::quant
