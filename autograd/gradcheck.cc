// GradCheck: central finite differences in f64 against Backward's gradients.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "autograd/autograd.h"
#include "core/ops.h"

namespace quanta {

GradCheckResult GradCheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                          const std::vector<Tensor>& inputs, double eps, double atol, double rtol) {
  GradCheckResult result;
  Generator gen(1234);
  // A fixed random projection turns any output into the scalar L = sum(f * v).
  Tensor probe = fn(inputs);
  Tensor v = Uniform(probe.shape(), 0.5, 1.5, &gen, probe.dtype(), probe.device());
  auto loss = [&](const std::vector<Tensor>& xs) {
    return Sum(Mul(fn(xs), v)).item<double>();
  };
  for (const Tensor& x : inputs) {
    if (x.requires_grad()) const_cast<Tensor&>(x).SetGrad(Tensor());
  }
  Tensor out = fn(inputs);
  QUANTA_CHECK(out.requires_grad(), "gradcheck: the function's output does not require grad");
  Backward(Sum(Mul(out, v)));

  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& x = inputs[i];
    if (!x.requires_grad()) continue;
    QUANTA_CHECK(x.dtype() == DType::kF64 && x.is_contiguous() && x.device().is_cpu(),
                 "gradcheck: input ", i, " must be a contiguous f64 cpu tensor, got ", x.Describe());
    std::vector<double> analytic = x.grad().defined() ? x.grad().ToVector<double>()
                                                      : std::vector<double>(x.numel(), 0.0);
    double* data = x.data<double>();
    bool reported = false;
    for (int64_t k = 0; k < x.numel(); ++k) {
      double saved = data[k];
      double plus, minus;
      {
        NoGradGuard no_grad;
        data[k] = saved + eps;
        plus = loss(inputs);
        data[k] = saved - eps;
        minus = loss(inputs);
        data[k] = saved;
      }
      double numeric = (plus - minus) / (2 * eps);
      double err = std::abs(analytic[k] - numeric);
      result.max_abs_error = std::max(result.max_abs_error, err);
      if (!(err <= atol + rtol * std::abs(numeric))) {
        result.ok = false;
        if (!reported) {
          absl::StrAppend(&result.report, "input ", i, " ", x.Describe(), " element ", k,
                          ": analytic ", analytic[k], ", numeric ", numeric, "\n");
          reported = true;
        }
      }
    }
  }
  return result;
}

}  // namespace quanta
