// Dynamic loss scaling for f16 training (bf16 rarely needs it): the loss is
// multiplied by a scale before backward; Step unscales the gradients, skips the
// step and halves the scale when any is inf or NaN, and doubles the scale after
// growth_interval clean steps.
//
//   GradScaler scaler;
//   { AutocastGuard amp(DType::kF16); loss = CrossEntropy(model->Forward(x), y); }
//   Backward(scaler.Scale(loss));
//   bool stepped = scaler.Step(opt);
#pragma once

#include "core/tensor.h"
#include "nn/optim.h"

namespace quanta::nn {

class GradScaler {
 public:
  explicit GradScaler(double init_scale = 65536.0, double growth_factor = 2.0, double backoff_factor = 0.5,
                      int growth_interval = 2000);
  Tensor Scale(const Tensor& loss) const;
  // Unscales the gradients of opt's parameters; steps unless one is not finite.
  // Returns whether the step was taken.
  bool Step(Optimizer& opt);
  double scale() const { return scale_; }

 private:
  double scale_, growth_, backoff_;
  int growth_interval_, clean_steps_ = 0;
};

}  // namespace quanta::nn
