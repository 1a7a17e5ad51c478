// GradScaler: unscale, check for inf/NaN, step or skip, adapt the scale.
#include "nn/amp.h"

#include <cmath>

#include "core/error.h"
#include "core/grad_mode.h"
#include "core/ops.h"

namespace quanta::nn {

GradScaler::GradScaler(double init_scale, double growth_factor, double backoff_factor, int growth_interval)
    : scale_(init_scale), growth_(growth_factor), backoff_(backoff_factor), growth_interval_(growth_interval) {
  QUANTA_CHECK(init_scale > 0 && growth_factor > 1 && backoff_factor > 0 && backoff_factor < 1 && growth_interval > 0,
               "GradScaler: bad settings");
}

Tensor GradScaler::Scale(const Tensor& loss) const { return Mul(loss, scale_); }

bool GradScaler::Step(Optimizer& opt) {
  bool finite = true;
  {
    NoGradGuard no_grad;
    for (const ParamGroup& g : opt.groups()) {
      for (const Tensor& p : g.params) {
        Tensor grad = p.grad();
        if (!grad.defined()) continue;
        // Sum of |g| * 0 is NaN exactly when some element is inf or NaN.
        double probe = Sum(Mul(Abs(grad.To(DType::kF32)), 0.0)).item<double>();
        if (!std::isfinite(probe)) finite = false;
        MulInplace(grad, Scalar(1.0 / scale_, grad.dtype()));
      }
    }
  }
  if (!finite) {
    scale_ *= backoff_;
    clean_steps_ = 0;
    opt.ZeroGrad();
    return false;
  }
  opt.Step();
  if (++clean_steps_ >= growth_interval_) {
    scale_ *= growth_;
    clean_steps_ = 0;
  }
  return true;
}

}  // namespace quanta::nn
