// Optimizer steps (under no-grad, in place on parameter storage) and schedules.
#include "nn/optim.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/error.h"
#include "core/grad_mode.h"
#include "core/ops.h"

namespace quanta::nn {

Optimizer::Optimizer(std::vector<ParamGroup> groups, double lr, double weight_decay)
    : groups_(std::move(groups)), lr_(lr), weight_decay_(weight_decay) {
  QUANTA_CHECK(lr >= 0, "optimizer: negative learning rate ", lr);
  for (const ParamGroup& g : groups_) {
    for (const Tensor& p : g.params) {
      QUANTA_CHECK(p.requires_grad() && p.is_leaf(), "optimizer: parameter ", p.Describe(), " in group \"",
                   g.name, "\" is not a leaf that requires grad");
    }
    state_.emplace_back(g.params.size());
  }
}

void Optimizer::ZeroGrad() {
  for (ParamGroup& g : groups_) {
    for (Tensor& p : g.params) p.SetGrad(Tensor());
  }
}

void Optimizer::Step() {
  NoGradGuard no_grad;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    ParamGroup& g = groups_[gi];
    double lr = lr_ * g.lr_mult;
    double wd = g.weight_decay.value_or(weight_decay_);
    for (size_t i = 0; i < g.params.size(); ++i) {
      Tensor grad = g.params[i].grad();
      if (!grad.defined()) continue;
      Update(g.params[i], grad, lr, wd, state_[gi][i]);
    }
  }
  ++steps_;
}

TensorMap Optimizer::StateDict() const {
  TensorMap out;
  out["step"] = Scalar(static_cast<double>(steps_), DType::kI64);
  out["lr"] = Scalar(lr_, DType::kF64);
  for (size_t gi = 0; gi < state_.size(); ++gi) {
    for (size_t i = 0; i < state_[gi].size(); ++i) {
      for (const auto& [slot, t] : state_[gi][i]) out[absl::StrCat("group", gi, ".param", i, ".", slot)] = t;
    }
  }
  return out;
}

absl::Status Optimizer::LoadStateDict(const TensorMap& state) {
  auto step = state.find("step"), lr = state.find("lr");
  if (step == state.end() || lr == state.end() || step->second.numel() != 1 || lr->second.numel() != 1) {
    return absl::InvalidArgumentError("optimizer state: missing or malformed \"step\" / \"lr\"");
  }
  std::vector<std::vector<TensorMap>> loaded(groups_.size());
  for (size_t gi = 0; gi < groups_.size(); ++gi) loaded[gi].resize(groups_[gi].params.size());
  for (const auto& [key, t] : state) {
    if (key == "step" || key == "lr") continue;
    std::vector<std::string> parts = absl::StrSplit(key, absl::MaxSplits('.', 2));
    size_t gi, i;
    if (parts.size() != 3 || parts[0].rfind("group", 0) != 0 || parts[1].rfind("param", 0) != 0 ||
        !absl::SimpleAtoi(parts[0].substr(5), &gi) || !absl::SimpleAtoi(parts[1].substr(5), &i) ||
        gi >= groups_.size() || i >= groups_[gi].params.size()) {
      return absl::InvalidArgumentError(absl::StrCat("optimizer state: unexpected key \"", key, "\""));
    }
    if (t.dim() != 0 && t.shape() != groups_[gi].params[i].shape()) {  // slots: per element or scalar
      return absl::InvalidArgumentError(absl::StrCat("optimizer state: \"", key, "\" is ", t.Describe(),
                                                     " but the parameter is ", groups_[gi].params[i].Describe()));
    }
    loaded[gi][i][parts[2]] = t.Clone();
  }
  state_ = std::move(loaded);
  steps_ = step->second.item<int64_t>();
  lr_ = lr->second.item<double>();
  return absl::OkStatus();
}

SGD::SGD(std::vector<ParamGroup> groups, const SgdOptions& o)
    : Optimizer(std::move(groups), o.lr, o.weight_decay), options(o) {
  QUANTA_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0),
               "SGD: nesterov needs momentum > 0 and no dampening");
}

void SGD::Update(Tensor& p, const Tensor& grad, double lr, double wd, TensorMap& slots) {
  Tensor g = wd != 0 ? Add(grad, Mul(p, wd)) : grad;
  if (options.momentum != 0) {
    auto it = slots.find("momentum_buffer");
    if (it == slots.end()) {
      it = slots.emplace("momentum_buffer", g.Clone()).first;  // torch starts v at g
    } else {
      Tensor& v = it->second;
      MulInplace(v, Scalar(options.momentum, v.dtype()));
      AddInplace(v, Mul(g, 1 - options.dampening));
    }
    g = options.nesterov ? Add(g, Mul(it->second, options.momentum)) : it->second;
  }
  SubInplace(p, Mul(g, lr));
}

Adam::Adam(std::vector<ParamGroup> groups, const AdamOptions& o, bool decoupled)
    : Optimizer(std::move(groups), o.lr, o.weight_decay), options(o), decoupled_(decoupled) {}

void Adam::Update(Tensor& p, const Tensor& grad, double lr, double wd, TensorMap& slots) {
  Tensor g = grad;
  if (wd != 0) {
    if (decoupled_) {
      MulInplace(p, Scalar(1 - lr * wd, p.dtype()));
    } else {
      g = Add(g, Mul(p, wd));
    }
  }
  if (!slots.count("exp_avg")) {
    slots["exp_avg"] = ZerosLike(p);
    slots["exp_avg_sq"] = ZerosLike(p);
    slots["step"] = Zeros({}, DType::kF64);
  }
  Tensor& m = slots["exp_avg"];
  Tensor& v = slots["exp_avg_sq"];
  Tensor& t = slots["step"];
  AddInplace(t, Scalar(1, DType::kF64));
  double step = t.item<double>();
  MulInplace(m, Scalar(options.beta1, m.dtype()));
  AddInplace(m, Mul(g, 1 - options.beta1));
  MulInplace(v, Scalar(options.beta2, v.dtype()));
  AddInplace(v, Mul(Square(g), 1 - options.beta2));
  double bc1 = 1 - std::pow(options.beta1, step), bc2 = 1 - std::pow(options.beta2, step);
  Tensor denom = Add(Div(Sqrt(v), std::sqrt(bc2)), options.eps);
  SubInplace(p, Mul(Div(m, denom), lr / bc1));
}

double ClipGradNorm(const std::vector<Tensor>& params, double max_norm) {
  NoGradGuard no_grad;
  double total = 0;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (g.defined()) total += Sum(Square(g.To(DType::kF64))).item<double>();
  }
  double norm = std::sqrt(total);
  if (norm > max_norm && norm > 0) {
    double scale = max_norm / (norm + 1e-6);
    for (const Tensor& p : params) {
      Tensor g = p.grad();
      if (g.defined()) MulInplace(g, Scalar(scale, g.dtype()));
    }
  }
  return norm;
}

double StepLr::LrAt(int64_t step) const { return base_lr() * std::pow(gamma_, static_cast<double>(step / step_size_)); }

double CosineWarmup::LrAt(int64_t step) const {
  if (step < warmup_) return base_lr() * static_cast<double>(step + 1) / static_cast<double>(warmup_);
  double t = std::min(1.0, static_cast<double>(step - warmup_) / std::max<int64_t>(1, total_ - warmup_));
  return min_lr_ + 0.5 * (base_lr() - min_lr_) * (1 + std::cos(M_PI * t));
}

double LinearWarmup::LrAt(int64_t step) const {
  if (step < warmup_) return base_lr() * static_cast<double>(step + 1) / static_cast<double>(warmup_);
  double left = static_cast<double>(total_ - step) / static_cast<double>(std::max<int64_t>(1, total_ - warmup_));
  return base_lr() * std::clamp(left, 0.0, 1.0);
}

double OneCycle::LrAt(int64_t step) const {
  double initial = base_lr() / div_, final_lr = initial / final_div_;
  double up = pct_start_ * static_cast<double>(total_) - 1;
  double down = static_cast<double>(total_) - 1;
  auto cosine = [](double from, double to, double frac) { return to + (from - to) * 0.5 * (1 + std::cos(M_PI * frac)); };
  double s = static_cast<double>(step);
  if (s <= up) return cosine(initial, base_lr(), up > 0 ? s / up : 1.0);
  return cosine(base_lr(), final_lr, std::min(1.0, (s - up) / std::max(1.0, down - up)));
}

}  // namespace quanta::nn
