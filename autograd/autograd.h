// Reverse-mode automatic differentiation over core's ops. Core records every op
// whose input requires grad (core/grad_mode.h); this package turns the records
// into a graph of GradNodes and runs it backwards. Not here: the backward math
// of each op (autograd/derivatives.cc) and modules (nn/).
//
//   Tensor w = Normal({3, 2}).SetRequiresGrad();
//   Tensor loss = Sum(Square(Matmul(x, w)));
//   Backward(loss);                      // w.grad() now holds dloss/dw
//   RegisterHook(w, [](const Tensor& g) { return Clamp(g, -1, 1); });
//   { NoGradGuard no_grad; w -= Mul(w.grad(), 0.1); }
//   GradCheckResult r = GradCheck(fn, {a, b});   // central differences in f64
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/grad_mode.h"
#include "core/tensor.h"

namespace quanta {

// One recorded op: what backward needs to differentiate it.
struct GradNode {
  Op op;
  OpAttrs attrs;
  std::vector<Tensor> inputs;                              // detached values
  std::vector<std::shared_ptr<AutogradMeta>> input_meta;   // null: no gradient wanted
  std::vector<Tensor> outputs;                             // detached values
  std::vector<std::weak_ptr<AutogradMeta>> output_meta;    // for hooks
  uint64_t sequence = 0;                                   // creation order
  bool released = false;                                   // saved values freed

  bool NeedsGrad(size_t input) const { return input_meta[input] != nullptr; }
};

// Runs one backward pass from root: gradients accumulate in the grad() of every
// leaf that requires grad. `grad` defaults to 1 for a one-element root. Unless
// retain_graph, the graph's saved tensors are freed and a second pass throws.
void Backward(const Tensor& root, const Tensor& grad = Tensor(), bool retain_graph = false);

// Calls hook with each gradient computed for t (summed over t's uses); a defined
// return value replaces the gradient. t must require grad.
void RegisterHook(Tensor& t, std::function<Tensor(const Tensor&)> hook);

// Compares backward's gradients with central finite differences of
// L = sum(fn(inputs) * v), v a fixed random tensor, element by element:
// |analytic - numeric| <= atol + rtol * |numeric|. Inputs should be f64 leaves
// that require grad; the others are held constant.
struct GradCheckResult {
  bool ok = true;
  double max_abs_error = 0;
  std::string report;  // the first failing element of each input, if any
};
GradCheckResult GradCheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                          const std::vector<Tensor>& inputs, double eps = 1e-6,
                          double atol = 1e-5, double rtol = 1e-3);

namespace internal {
// The backward rule of op: gradients for each input (undefined where none).
using BackwardRule = std::vector<Tensor> (*)(const GradNode& node, const std::vector<Tensor>& grads);
// nullptr when op has no gradient (comparisons, argmax, random, ...).
BackwardRule FindBackwardRule(Op op);
bool IsDifferentiable(Op op);
}  // namespace internal

}  // namespace quanta
