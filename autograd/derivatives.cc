// The backward rule of every op in core/ops.def, one entry each, written with
// forward ops so that any backend that runs forward can train (STYLE.md §4).
// grads[j] is the gradient of output j (undefined if none reached it); a rule
// returns one gradient per input, undefined where the input needs none.
#include <cmath>

#include "autograd/autograd.h"
#include "core/error.h"
#include "core/ops.h"

namespace quanta::internal {
namespace {

using Grads = std::vector<Tensor>;

const Tensor& X(const GradNode& n, int i = 0) { return n.inputs[i]; }
const Tensor& Y(const GradNode& n, int j = 0) { return n.outputs[j]; }
Tensor Like(const Tensor& t, double v) { return Scalar(v, t.dtype(), t.device()); }
Tensor Mask(const Tensor& boolean, DType dtype) { return boolean.To(dtype); }

// Sums g over the dims where `shape` is 1 (or absent, leading): the adjoint of
// broadcasting g's shape from `shape`.
Tensor SumToShape(const Tensor& g, const Shape& shape) {
  if (g.shape() == shape) return g;
  int lead = g.dim() - static_cast<int>(shape.size());
  std::vector<int64_t> dims;
  for (int d = 0; d < g.dim(); ++d) {
    if (d < lead || (shape[d - lead] == 1 && g.size(d) != 1)) dims.push_back(d);
  }
  Tensor s = dims.empty() ? g : Sum(g, dims, /*keepdim=*/true);
  return s.Reshape(shape);
}

// ---- elementwise ------------------------------------------------------------------

Grads NegBackward(const GradNode&, const Grads& g) { return {Neg(g[0])}; }
Grads ExpBackward(const GradNode& n, const Grads& g) { return {Mul(g[0], Y(n))}; }
Grads LogBackward(const GradNode& n, const Grads& g) { return {Div(g[0], X(n))}; }
Grads SqrtBackward(const GradNode& n, const Grads& g) { return {Div(Mul(g[0], 0.5), Y(n))}; }
Grads RsqrtBackward(const GradNode& n, const Grads& g) {
  return {Mul(Mul(g[0], -0.5), Pow(Y(n), 3))};  // d/dx x^-1/2 = -1/2 x^-3/2 = -1/2 y^3
}
Grads AbsBackward(const GradNode& n, const Grads& g) {
  DType t = X(n).dtype();
  return {Mul(g[0], Sub(Mask(Gt(X(n), 0), t), Mask(Lt(X(n), 0), t)))};
}
Grads ReluBackward(const GradNode& n, const Grads& g) { return {ThresholdBackward(g[0], X(n))}; }
Grads SigmoidBackward(const GradNode& n, const Grads& g) {
  return {Mul(g[0], Mul(Y(n), Sub(Like(Y(n), 1), Y(n))))};
}
Grads TanhBackward(const GradNode& n, const Grads& g) {
  return {Mul(g[0], Sub(Like(Y(n), 1), Square(Y(n))))};
}
Grads ErfBackward(const GradNode& n, const Grads& g) {
  return {Mul(g[0], Mul(Exp(Neg(Square(X(n)))), 2.0 / std::sqrt(M_PI)))};
}
// d/dx x Phi(x) = Phi(x) + x phi(x).
Grads GeluBackward(const GradNode& n, const Grads& g) {
  const Tensor& x = X(n);
  Tensor cdf = Mul(Add(Erf(Mul(x, M_SQRT1_2)), 1.0), 0.5);
  Tensor pdf = Mul(Exp(Mul(Square(x), -0.5)), 1.0 / std::sqrt(2 * M_PI));
  return {Mul(g[0], Add(cdf, Mul(x, pdf)))};
}

Grads RoundBackward(const GradNode& n, const Grads&) { return {ZerosLike(X(n))}; }  // 0 almost everywhere

Grads AddBackward(const GradNode&, const Grads& g) { return {g[0], g[0]}; }
Grads SubBackward(const GradNode&, const Grads& g) { return {g[0], Neg(g[0])}; }
Grads MulBackward(const GradNode& n, const Grads& g) {
  return {n.NeedsGrad(0) ? Mul(g[0], X(n, 1)) : Tensor(), n.NeedsGrad(1) ? Mul(g[0], X(n, 0)) : Tensor()};
}
Grads DivBackward(const GradNode& n, const Grads& g) {
  return {n.NeedsGrad(0) ? Div(g[0], X(n, 1)) : Tensor(),
          n.NeedsGrad(1) ? Neg(Div(Mul(g[0], Y(n)), X(n, 1))) : Tensor()};
}
Grads PowBackward(const GradNode& n, const Grads& g) {
  const Tensor &a = X(n, 0), &b = X(n, 1);
  return {n.NeedsGrad(0) ? Mul(g[0], Mul(b, Pow(a, Sub(b, 1.0)))) : Tensor(),
          n.NeedsGrad(1) ? Mul(g[0], Mul(Y(n), Log(a))) : Tensor()};
}
// Ties split the gradient in half, as torch.maximum / torch.minimum.
Grads ExtremumBackward(const GradNode& n, const Grads& g, bool maximum) {
  const Tensor &a = X(n, 0), &b = X(n, 1);
  DType t = a.dtype();
  Tensor wins = Mask(maximum ? Gt(a, b) : Lt(a, b), t);
  Tensor share_a = Add(wins, Mul(Mask(Eq(a, b), t), 0.5));
  return {Mul(g[0], share_a), Mul(g[0], Sub(Like(share_a, 1), share_a))};
}
Grads MaximumBackward(const GradNode& n, const Grads& g) { return ExtremumBackward(n, g, true); }
Grads MinimumBackward(const GradNode& n, const Grads& g) { return ExtremumBackward(n, g, false); }
// Linear in the gradient it masks; zero almost everywhere in the input.
Grads ThresholdBackwardBackward(const GradNode& n, const Grads& g) {
  return {n.NeedsGrad(0) ? ThresholdBackward(g[0], X(n, 1)) : Tensor(), n.NeedsGrad(1) ? ZerosLike(X(n, 1)) : Tensor()};
}

Grads WhereBackward(const GradNode& n, const Grads& g) {
  Tensor take_a = Mask(X(n, 0), g[0].dtype());
  return {Tensor(), Mul(g[0], take_a), Mul(g[0], Sub(Like(take_a, 1), take_a))};
}

Grads CopyBackward(const GradNode& n, const Grads& g) {
  return {g[0].To(X(n).device()).To(X(n).dtype())};
}

// ---- reductions (outputs keep the reduced dims at size 1) --------------------------

Grads SumBackward(const GradNode& n, const Grads& g) { return {g[0].Expand(X(n).shape())}; }
// The gradient goes to every element equal to the extremum, split evenly.
Grads ExtremeReduceBackward(const GradNode& n, const Grads& g) {
  const Tensor& x = X(n);
  Tensor mask = Mask(Eq(x, Y(n).Expand(x.shape())), x.dtype());
  Tensor count = Sum(mask, n.attrs.dims, /*keepdim=*/true);
  return {Mul(mask, Div(g[0], count).Expand(x.shape()))};
}

// ---- linear algebra, convolution, pooling -----------------------------------------

// a (..., M, K), b (..., K, N), batch dims equal to y's or 1 (broadcast).
Grads MatmulBackward(const GradNode& n, const Grads& g) {
  const Tensor &a = X(n, 0), &b = X(n, 1);
  return {n.NeedsGrad(0) ? SumToShape(Matmul(g[0], b.Transpose(-2, -1)), a.shape()) : Tensor(),
          n.NeedsGrad(1) ? SumToShape(Matmul(a.Transpose(-2, -1), g[0]), b.shape()) : Tensor()};
}

Grads Conv2dBackward(const GradNode& n, const Grads& g) {
  Conv2dOptions o = Conv2dOptionsOf(n.attrs);
  const Tensor &x = X(n, 0), &w = X(n, 1);
  Grads out = {n.NeedsGrad(0) ? Conv2dBackwardInput(g[0], w, x.shape(), o) : Tensor(),
               n.NeedsGrad(1) ? Conv2dBackwardWeight(g[0], x, w.shape(), o) : Tensor()};
  if (n.inputs.size() > 2) out.push_back(n.NeedsGrad(2) ? Sum(g[0], {0, 2, 3}) : Tensor());
  return out;
}

Grads MaxPool2dBackwardRule(const GradNode& n, const Grads& g) {
  return {MaxPool2dBackward(g[0], Y(n, 1), X(n).shape())};
}

// ---- batch normalization ------------------------------------------------------------
// Inputs x, weight, bias and, with the epilogue's residual, the residual;
// outputs y, mean, var. The fused pass gives what flows back from y (through
// ReLU's mask where the epilogue has relu: Note [Batch norm epilogue]), and the
// residual's gradient (y's own without relu); gradients that reach the
// statistics themselves (rare: running statistics are updated detached) add
// d mean / dx = 1 / n and d var / dx = 2 (x - mean) / n. tests/nn/layers_test.cc
// holds the fused pair equal to the composition of ops it replaces.
Grads BatchNormBackwardRule(const GradNode& n, const Grads& g) {
  const Tensor &x = X(n, 0), &w = X(n, 1);
  const Tensor residual = n.attrs.residual ? X(n, 3) : Tensor();
  Tensor gx, gw, gb, gr;
  if (g[0].defined() && n.attrs.relu) {
    std::array<Tensor, 4> r =
        BatchNormReluBackward(g[0], x, w, X(n, 2), Y(n, 1), Y(n, 2), n.attrs.scalar, residual);
    gx = r[0], gw = r[1], gb = r[2], gr = r[3];
  } else if (g[0].defined()) {
    std::array<Tensor, 3> r = BatchNormBackward(g[0], x, w, Y(n, 1), Y(n, 2), n.attrs.scalar);
    gx = r[0], gw = r[1], gb = r[2];
    if (residual.defined()) gr = g[0];
  }
  const bool g_mean = g.size() > 1 && g[1].defined(), g_var = g.size() > 2 && g[2].defined();
  if (g_mean || g_var) {
    const Shape channel = {1, x.size(1), 1, 1};
    const double count = static_cast<double>(x.numel() / x.size(1));
    Tensor extra = ZerosLike(x);
    if (g_mean) extra = Add(extra, Mul(g[1].To(x.dtype()).View(channel), 1 / count));
    if (g_var) {
      Tensor centered = Sub(x, Y(n, 1).To(x.dtype()).View(channel));
      extra = Add(extra, Mul(centered, Mul(g[2].To(x.dtype()).View(channel), 2 / count)));
    }
    gx = gx.defined() ? Add(gx, extra) : extra;
  }
  Grads out = {n.NeedsGrad(0) ? gx : Tensor(), n.NeedsGrad(1) ? gw : Tensor(), n.NeedsGrad(2) ? gb : Tensor()};
  if (residual.defined()) out.push_back(n.NeedsGrad(3) ? gr : Tensor());
  return out;
}

// Inputs x, weight, bias; outputs y, mean, rstd (x's shape with the last k =
// weight.dim() dims 1). With xhat = (x - mean) rstd and gh = g weight, over each
// row of D values: dx = rstd (gh - mean(gh) - xhat mean(gh xhat)), dweight =
// the sum over rows of g xhat, dbias = that of g. Gradients that reach the
// statistics themselves add g_mean / D and -g_rstd rstd^2 xhat / D
// (d rstd / dx = -rstd^3 (x - mean) / D). tests/nn/layers_test.cc holds the
// fused op equal to the composition of ops it replaces, gradients included.
Grads LayerNormBackwardRule(const GradNode& n, const Grads& g) {
  const Tensor &x = X(n, 0), &w = X(n, 1);
  const int k = w.dim();
  std::vector<int64_t> rows, row;
  for (int d = 0; d < x.dim(); ++d) (d < x.dim() - k ? rows : row).push_back(d);
  const double D = static_cast<double>(w.numel());
  const Tensor rstd = Y(n, 2).To(x.dtype());
  const Tensor xhat = Mul(Sub(x, Y(n, 1).To(x.dtype())), rstd);
  Tensor gx, gw, gb;
  if (g[0].defined()) {
    Tensor gh = Mul(g[0], w);
    gx = Mul(rstd, Sub(Sub(gh, Mean(gh, row, true)), Mul(xhat, Mean(Mul(gh, xhat), row, true))));
    gw = rows.empty() ? Mul(g[0], xhat) : Sum(Mul(g[0], xhat), rows);
    gb = rows.empty() ? g[0] : Sum(g[0], rows);
  }
  const bool g_mean = g.size() > 1 && g[1].defined(), g_rstd = g.size() > 2 && g[2].defined();
  if (g_mean || g_rstd) {
    Tensor extra = ZerosLike(x);
    if (g_mean) extra = Add(extra, Mul(g[1].To(x.dtype()), 1 / D));
    if (g_rstd) extra = Sub(extra, Mul(Mul(xhat, Square(rstd)), Mul(g[2].To(x.dtype()), 1 / D)));
    gx = gx.defined() ? Add(gx, extra) : extra;
  }
  return {n.NeedsGrad(0) ? gx : Tensor(), n.NeedsGrad(1) ? gw : Tensor(), n.NeedsGrad(2) ? gb : Tensor()};
}

// y = softmax(x) along dim: dx = y (g - sum(g y)) = g y - y sum(g y).
Grads SoftmaxBackward(const GradNode& n, const Grads& g) {
  const Tensor& y = Y(n);
  Tensor gy = Mul(g[0], y);
  return {Sub(gy, Mul(y, Sum(gy, {n.attrs.dims[0]}, /*keepdim=*/true)))};
}

Grads GatherBackward(const GradNode& n, const Grads& g) {
  return {ScatterAdd(X(n, 0).shape(), n.attrs.dims[0], X(n, 1), g[0]), Tensor()};
}
Grads ScatterAddBackward(const GradNode& n, const Grads& g) {
  return {Gather(g[0], n.attrs.dims[0], X(n, 1)), Tensor()};
}

// ---- fake quantization ------------------------------------------------------------------
// Inputs x, scale, zero point (one value per channel, or one: Note [Fake-quant
// parameter sums] in core/ops.cc); one fused pass gives the gradient of x and
// the parameters' gradients summed per channel (only those some input needs:
// an observer's scale takes none). tests/core/quantize_test.cc holds the pass
// equal to the formulas written out with ops.
Grads FakeQuantizeBackwardRule(const GradNode& n, const Grads& g) {
  std::array<bool, 3> needed = {n.NeedsGrad(0), n.NeedsGrad(1), n.NeedsGrad(2)};
  if (!needed[0] && !needed[1] && !needed[2]) return {Tensor(), Tensor(), Tensor()};
  std::array<Tensor, 3> grads = FakeQuantizeBackwardSummed(g[0], X(n, 0), X(n, 1), X(n, 2), n.attrs, needed);
  return {grads[0], grads[1], grads[2]};
}

// ---- structural ops -----------------------------------------------------------------

Grads ViewBackward(const GradNode& n, const Grads& g) { return {g[0].Reshape(X(n).shape())}; }
Grads PermuteBackward(const GradNode& n, const Grads& g) {
  std::vector<int64_t> inverse(n.attrs.dims.size());
  for (size_t i = 0; i < inverse.size(); ++i) inverse[n.attrs.dims[i]] = static_cast<int64_t>(i);
  return {g[0].Permute(inverse)};
}
Grads ExpandBackward(const GradNode& n, const Grads& g) { return {SumToShape(g[0], X(n).shape())}; }
// Zeros shaped like x, channels-last when x's channels are its innermost dim
// (x channels-last, or a slice of such a tensor: the subsampled input of
// ResNet's option-A shortcut), else contiguous; what PyTorch's zeros_like with
// preserve_format gives. The slice's gradient is written into it and then added
// to the block input's other gradient, channels-last like the convolutions'
// (Note [Channels-last slice gradients]).
Tensor ZerosInLayoutOf(const Tensor& x) {
  if (x.dim() == 4 && x.size(1) > 1 && x.stride(1) == 1 && x.size(2) * x.size(3) > 1) {
    return Zeros({x.size(0), x.size(2), x.size(3), x.size(1)}, x.dtype(), x.device()).Permute({0, 3, 1, 2});
  }
  return ZerosLike(x);
}

// Note [Channels-last slice gradients]: an NCHW buffer here made the copy into
// it and the add after it (the engine's accumulation, NCHW + channels-last)
// strided, scalar loops. In a ResNet-20 training step (perf, bench_nn, 1 and 2
// threads) the add was 3.7% of the samples, 40% of them in its scalar loop, now
// 2.7%, all dense; for the copy see Note [Channels-last concat] in core/ops.cc.
Grads SliceBackward(const GradNode& n, const Grads& g) {
  const std::vector<int64_t>& d = n.attrs.dims;  // {dim, start, end, step}
  Tensor gx = ZerosInLayoutOf(X(n));
  gx.Slice(d[0], d[1], d[2], d[3]).CopyFrom(g[0]);
  return {gx};
}
Grads SelectBackward(const GradNode& n, const Grads& g) {
  Tensor gx = ZerosInLayoutOf(X(n));
  gx.Select(n.attrs.dims[0], n.attrs.dims[1]).CopyFrom(g[0]);
  return {gx};
}
Grads ConcatBackward(const GradNode& n, const Grads& g) {
  Grads out;
  int64_t d = n.attrs.dims[0], offset = 0;
  for (const Tensor& x : n.inputs) {
    out.push_back(g[0].Narrow(d, offset, x.size(d)).To(x.dtype()));
    offset += x.size(d);
  }
  return out;
}

struct RuleTable {
  std::array<BackwardRule, kNumOps> rules{};
  std::array<bool, kNumOps> listed{};

  void Set(Op op, BackwardRule rule) {
    rules[static_cast<int>(op)] = rule;
    listed[static_cast<int>(op)] = true;
  }
  void NotDifferentiable(Op op) { listed[static_cast<int>(op)] = true; }

  RuleTable() {
#define QUANTA_RULE(Name, str) Set(Op::k##Name, &Name##Backward);
    QUANTA_UNARY_OPS(QUANTA_RULE)
    QUANTA_BINARY_OPS(QUANTA_RULE)
#undef QUANTA_RULE
#define QUANTA_NO_RULE(Name, str) NotDifferentiable(Op::k##Name);
    QUANTA_COMPARE_OPS(QUANTA_NO_RULE)
#undef QUANTA_NO_RULE
    Set(Op::kSum, &SumBackward);
    Set(Op::kMax, &ExtremeReduceBackward);
    Set(Op::kMin, &ExtremeReduceBackward);
    NotDifferentiable(Op::kArgmax);
    Set(Op::kCopy, &CopyBackward);
    NotDifferentiable(Op::kFill);
    NotDifferentiable(Op::kArange);
    Set(Op::kWhere, &WhereBackward);
    Set(Op::kMatmul, &MatmulBackward);
    Set(Op::kConv2d, &Conv2dBackward);
    NotDifferentiable(Op::kConv2dBackwardInput);   // no double backward yet
    NotDifferentiable(Op::kConv2dBackwardWeight);
    Set(Op::kMaxPool2d, &MaxPool2dBackwardRule);
    NotDifferentiable(Op::kMaxPool2dBackward);
    Set(Op::kBatchNorm, &BatchNormBackwardRule);
    NotDifferentiable(Op::kBatchNormBackward);  // no double backward yet
    Set(Op::kLayerNorm, &LayerNormBackwardRule);
    Set(Op::kSoftmax, &SoftmaxBackward);
    Set(Op::kGather, &GatherBackward);
    Set(Op::kScatterAdd, &ScatterAddBackward);
    NotDifferentiable(Op::kQuantize);    // quantized tensors carry no gradient
    NotDifferentiable(Op::kDequantize);
    Set(Op::kFakeQuantize, &FakeQuantizeBackwardRule);
    NotDifferentiable(Op::kFakeQuantizeBackward);
    NotDifferentiable(Op::kBlockQuantize);  // codes carry no gradient; BlockFakeQuantize passes it straight through
    NotDifferentiable(Op::kBlockDequantize);
    NotDifferentiable(Op::kQuantizedMatmul);  // inference only
    NotDifferentiable(Op::kQuantizedConv2d);
    NotDifferentiable(Op::kUniform);
    NotDifferentiable(Op::kNormal);
    NotDifferentiable(Op::kBernoulli);
    Set(Op::kView, &ViewBackward);
    Set(Op::kPermute, &PermuteBackward);
    Set(Op::kExpand, &ExpandBackward);
    Set(Op::kSlice, &SliceBackward);
    Set(Op::kSelect, &SelectBackward);
    Set(Op::kConcat, &ConcatBackward);
    for (int i = 0; i < kNumOps; ++i) {
      QUANTA_CHECK(listed[i], "autograd: op ", OpName(static_cast<Op>(i)),
                   " has neither a backward rule nor a NotDifferentiable entry");
    }
  }
};
// A new op in core/ops.def needs an entry above (rule or NotDifferentiable).
static_assert(kNumOps == 63, "give the new op its backward rule, then update this count");

const RuleTable& Rules() {
  static const RuleTable* table = new RuleTable();
  return *table;
}

}  // namespace

BackwardRule FindBackwardRule(Op op) { return Rules().rules[static_cast<int>(op)]; }
bool IsDifferentiable(Op op) { return FindBackwardRule(op) != nullptr; }

}  // namespace quanta::internal
