// Optimizers with parameter groups (each its own learning-rate multiplier and
// weight decay), gradient clipping and learning-rate schedules. State (momentum,
// moments, step) saves into and restores from a TensorMap for checkpoints.
//
//   SGD opt({{model->Parameters()}, {quant_params, .lr_mult = 0.1, .name = "quant"}},
//           {.lr = 0.1, .momentum = 0.9, .weight_decay = 5e-4});
//   CosineWarmup schedule(&opt, /*warmup=*/500, /*total=*/50000);
//   opt.ZeroGrad(); Backward(loss); ClipGradNorm(params, 1.0); opt.Step(); schedule.Step();
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/tensor.h"
#include "nn/module.h"

namespace quanta::nn {

struct ParamGroup {
  std::vector<Tensor> params;
  double lr_mult = 1.0;                       // this group's lr = base lr x lr_mult
  std::optional<double> weight_decay;         // defaults to the optimizer's
  std::string name;
};

class Optimizer {
 public:
  Optimizer(std::vector<ParamGroup> groups, double lr, double weight_decay);
  virtual ~Optimizer() = default;

  // Drops every gradient (the next backward starts from nothing).
  void ZeroGrad();
  // One update of every parameter that has a gradient.
  void Step();

  double lr() const { return lr_; }
  void SetLr(double lr) { lr_ = lr; }
  int64_t steps() const { return steps_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }

  // "step", "lr" and "group<g>.param<i>.<slot>" for every per-parameter state slot.
  TensorMap StateDict() const;
  absl::Status LoadStateDict(const TensorMap& state);

 protected:
  // Updates one parameter in place (called under NoGradGuard). `slots` holds this
  // parameter's state tensors by name, created by the subclass on first use.
  virtual void Update(Tensor& param, const Tensor& grad, double lr, double weight_decay,
                      TensorMap& slots) = 0;

 private:
  std::vector<ParamGroup> groups_;
  std::vector<std::vector<TensorMap>> state_;  // [group][param] -> slots
  double lr_;
  double weight_decay_;
  int64_t steps_ = 0;
};

struct SgdOptions {
  double lr = 0.01;
  double momentum = 0;
  double dampening = 0;
  bool nesterov = false;
  double weight_decay = 0;  // L2, added to the gradient
};
// torch.optim.SGD: v = momentum v + (1 - dampening) g; p -= lr (nesterov ? g + momentum v : v).
class SGD : public Optimizer {
 public:
  SGD(std::vector<ParamGroup> groups, const SgdOptions& options);
  SgdOptions options;

 protected:
  void Update(Tensor& param, const Tensor& grad, double lr, double weight_decay, TensorMap& slots) override;
};

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;
};
// Adam (Kingma & Ba) with L2 weight decay in the gradient; AdamW decouples it
// (Loshchilov & Hutter): p -= lr wd p before the Adam step.
class Adam : public Optimizer {
 public:
  Adam(std::vector<ParamGroup> groups, const AdamOptions& options, bool decoupled_weight_decay = false);
  AdamOptions options;

 protected:
  void Update(Tensor& param, const Tensor& grad, double lr, double weight_decay, TensorMap& slots) override;

 private:
  bool decoupled_;
};
class AdamW : public Adam {
 public:
  AdamW(std::vector<ParamGroup> groups, const AdamOptions& options) : Adam(std::move(groups), options, true) {}
};

// Scales all gradients so that their global L2 norm is at most max_norm;
// returns the norm before clipping.
double ClipGradNorm(const std::vector<Tensor>& params, double max_norm);

// Learning-rate schedules: Step() advances one optimizer step and sets the lr.
class LrSchedule {
 public:
  // Subclasses call SetStep(0) once constructed (LrAt is virtual).
  LrSchedule(Optimizer* optimizer, double base_lr) : optimizer_(optimizer), base_lr_(base_lr) {}
  virtual ~LrSchedule() = default;
  virtual double LrAt(int64_t step) const = 0;
  void Step() { optimizer_->SetLr(LrAt(++step_)); }
  int64_t step() const { return step_; }
  void SetStep(int64_t step) {
    step_ = step;
    optimizer_->SetLr(LrAt(step_));
  }

 protected:
  double base_lr() const { return base_lr_; }

 private:
  Optimizer* optimizer_;
  double base_lr_;
  int64_t step_ = 0;
};

// lr = base gamma^floor(step / step_size).
class StepLr : public LrSchedule {
 public:
  StepLr(Optimizer* opt, int64_t step_size, double gamma)
      : LrSchedule(opt, opt->lr()), step_size_(step_size), gamma_(gamma) { SetStep(0); }
  double LrAt(int64_t step) const override;

 private:
  int64_t step_size_;
  double gamma_;
};

// Linear warmup: lr = base (step + 1) / warmup for step < warmup; then cosine
// from base to min_lr, reaching it at `total`.
class CosineWarmup : public LrSchedule {
 public:
  CosineWarmup(Optimizer* opt, int64_t warmup, int64_t total, double min_lr = 0)
      : LrSchedule(opt, opt->lr()), warmup_(warmup), total_(total), min_lr_(min_lr) { SetStep(0); }
  double LrAt(int64_t step) const override;

 private:
  int64_t warmup_, total_;
  double min_lr_;
};

// BERT's fine-tuning schedule: the same linear warmup, then linear decay from
// base to 0 at `total` (transformers' get_linear_schedule_with_warmup, whose
// warmup starts at step / warmup instead of (step + 1) / warmup).
class LinearWarmup : public LrSchedule {
 public:
  LinearWarmup(Optimizer* opt, int64_t warmup, int64_t total)
      : LrSchedule(opt, opt->lr()), warmup_(warmup), total_(total) { SetStep(0); }
  double LrAt(int64_t step) const override;

 private:
  int64_t warmup_, total_;
};

// One-cycle (Smith 2018), cosine annealing as torch's OneCycleLR: from max/div_factor
// up to max over pct_start of total, then down to max/(div_factor final_div_factor).
class OneCycle : public LrSchedule {
 public:
  OneCycle(Optimizer* opt, double max_lr, int64_t total, double pct_start = 0.3, double div_factor = 25,
           double final_div_factor = 1e4)
      : LrSchedule(opt, max_lr), total_(total), pct_start_(pct_start), div_(div_factor), final_div_(final_div_factor) {
    SetStep(0);
  }
  double LrAt(int64_t step) const override;

 private:
  int64_t total_;
  double pct_start_, div_, final_div_;
};

}  // namespace quanta::nn
