// Op frontends: checks, output shape and dtype, dispatch. Composite ops (softmax,
// var, clamp, concat, eye, ...) are written here from the primitives of ops.def.
#include "core/ops.h"

#include <algorithm>
#include <cmath>

#include "absl/functional/function_ref.h"
#include "absl/strings/str_join.h"
#include "core/backend.h"
#include "core/grad_mode.h"
#include "core/minifloat.h"

namespace quanta {
namespace {

std::string DescribeAll(std::span<const Tensor> tensors) {
  std::vector<std::string> parts;
  for (const Tensor& t : tensors) parts.push_back(t.Describe());
  return absl::StrJoin(parts, ", ");
}

void CheckDefined(const char* op, std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors) QUANTA_CHECK(t->defined(), op, ": undefined tensor argument");
}

// qint8/quint8: the dtypes integer ops read and write between layers.
bool IsInt8(DType d) { return d == DType::kQInt8 || d == DType::kQUInt8; }
bool IsPerTensorInt8(const Tensor& t) { return IsInt8(t.dtype()) && t.qparams().scheme == QScheme::kPerTensor; }

void CheckNotQuantized(const char* op, const Tensor& t) {
  QUANTA_CHECK(!t.is_quantized(), op, ": ", t.Describe(),
               " is quantized; dequantize it first (float ops do not take quantized input)");
}

// Floating-point math on integers promotes to f32, as in PyTorch.
bool NeedsFloat(Op op) {
  switch (op) {
    case Op::kExp: case Op::kLog: case Op::kSqrt: case Op::kRsqrt:
    case Op::kSigmoid: case Op::kTanh: case Op::kGelu: case Op::kDiv: case Op::kErf:
      return true;
    default:
      return false;
  }
}

Tensor ScalarLike(const Tensor& like, double value) {
  bool integral_value = value == std::floor(value) && std::abs(value) < 9.0e15;
  DType dtype = IsFloating(like.dtype()) || (integral_value && like.dtype() != DType::kBool)
                    ? like.dtype()
                    : DType::kF32;
  return Scalar(value, dtype, like.device());
}

// An elementwise result keeps channels-last memory when an operand of the full
// 4-D shape has it (as PyTorch's suggest_memory_format), so that a channels-last
// network stays so from op to op.
// An (N, C, H, W) tensor in channels-last memory.
Tensor EmptyChannelsLast(const Shape& shape, DType dtype, const Device& device) {
  return Tensor::Empty({shape[0], shape[2], shape[3], shape[1]}, dtype, device).Permute({0, 3, 1, 2});
}

Tensor EmptyElementwise(const Shape& shape, DType dtype, const Device& device, std::initializer_list<const Tensor*> operands) {
  if (shape.size() == 4) {
    for (const Tensor* t : operands) {
      if (t->shape() == shape && t->suggests_channels_last()) return EmptyChannelsLast(shape, dtype, device);
    }
  }
  return Tensor::Empty(shape, dtype, device);
}

Tensor UnaryOp(Op op, const Tensor& x) {
  CheckDefined(OpName(op), {&x});
  CheckNotQuantized(OpName(op), x);
  DType dtype = NeedsFloat(op) && !IsFloating(x.dtype()) ? DType::kF32 : x.dtype();
  Tensor in = x.To(dtype);
  Tensor out = EmptyElementwise(x.shape(), dtype, x.device(), {&x});
  Dispatch(op, {&in, 1}, {&out, 1});
  return out;
}

// In-place writes to a tensor in the graph would corrupt saved values: refused
// while recording (optimizers update parameters under NoGradGuard).
void CheckInplace(Op op, const Tensor& target, const Tensor* other = nullptr) {
  QUANTA_CHECK(!GradModeEnabled() || (!target.requires_grad() && !(other && other->requires_grad())),
               OpName(op), "_: in-place op on ", target.Describe(),
               " while recording gradients; use the out-of-place form or NoGradGuard");
}

Tensor& UnaryInplace(Op op, Tensor& x) {
  CheckDefined(OpName(op), {&x});
  CheckInplace(op, x);
  CheckNotQuantized(OpName(op), x);
  QUANTA_CHECK(!NeedsFloat(op) || IsFloating(x.dtype()), OpName(op), "_: result is floating but ",
               x.Describe(), " is not; use the out-of-place form");
  Dispatch(op, {&x, 1}, {&x, 1});
  return x;
}

// Broadcasts and promotes a and b; returns the common shape and dtype.
std::pair<Shape, DType> BinaryGeometry(Op op, const Tensor& a, const Tensor& b) {
  CheckDefined(OpName(op), {&a, &b});
  CheckNotQuantized(OpName(op), a);
  CheckNotQuantized(OpName(op), b);
  Shape shape;
  QUANTA_CHECK(TryBroadcastShapes(a.shape(), b.shape(), &shape), OpName(op), ": shapes ",
               ShapeToString(a.shape()), " and ", ShapeToString(b.shape()),
               " do not broadcast (", a.Describe(), ", ", b.Describe(), ")");
  DType dtype = PromoteTypes(a.dtype(), b.dtype());
  if (NeedsFloat(op) && !IsFloating(dtype)) dtype = DType::kF32;
  return {shape, dtype};
}

Tensor BinaryOp(Op op, const Tensor& a, const Tensor& b, bool compare) {
  auto [shape, dtype] = BinaryGeometry(op, a, b);
  Tensor in[2] = {a.To(dtype).Expand(shape), b.To(dtype).Expand(shape)};
  Tensor out = EmptyElementwise(shape, compare ? DType::kBool : dtype, a.device(), {&a, &b});
  Dispatch(op, in, {&out, 1});
  return out;
}

Tensor& BinaryInplace(Op op, Tensor& a, const Tensor& b) {
  auto [shape, dtype] = BinaryGeometry(op, a, b);
  CheckInplace(op, a, &b);
  QUANTA_CHECK(shape == a.shape(), OpName(op), "_: result shape ", ShapeToString(shape),
               " differs from the in-place operand ", a.Describe());
  QUANTA_CHECK(!IsFloating(dtype) || IsFloating(a.dtype()), OpName(op), "_: result dtype ",
               Name(dtype), " cannot be stored in ", a.Describe());
  Tensor in[2] = {a, b.To(a.dtype()).Expand(shape)};
  Dispatch(op, in, {&a, 1});
  return a;
}

// Wraps, sorts and dedups reduction dims; empty means all.
std::vector<int64_t> ReductionDims(const char* op, const Tensor& x, const std::vector<int64_t>& dims) {
  std::vector<int64_t> out;
  if (dims.empty()) {
    for (int d = 0; d < x.dim(); ++d) out.push_back(d);
    return out;
  }
  for (int64_t d : dims) {
    int w = WrapDimOrNeg(d, std::max(x.dim(), 1));
    QUANTA_CHECK(w >= 0, op, ": dim ", d, " out of range for ", x.Describe());
    if (x.dim() > 0) out.push_back(w);
  }
  std::sort(out.begin(), out.end());
  QUANTA_CHECK(std::adjacent_find(out.begin(), out.end()) == out.end(), op, ": dim repeated in [",
               absl::StrJoin(dims, ", "), "] for ", x.Describe());
  return out;
}

Tensor Reduce(Op op, const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, DType dtype) {
  CheckDefined(OpName(op), {&x});
  CheckNotQuantized(OpName(op), x);
  OpAttrs attrs;
  attrs.dims = ReductionDims(OpName(op), x, dims);
  Shape kept = x.shape();
  for (int64_t d : attrs.dims) {
    QUANTA_CHECK(op == Op::kSum || x.size(d) > 0, OpName(op), ": cannot reduce the empty dim ", d,
                 " of ", x.Describe());
    kept[d] = 1;
  }
  Tensor out = Tensor::Empty(kept, dtype, x.device());
  Dispatch(op, {&x, 1}, {&out, 1}, attrs);
  if (keepdim) return out;
  Shape squeezed;
  for (int d = 0; d < x.dim(); ++d) {
    if (!std::binary_search(attrs.dims.begin(), attrs.dims.end(), d)) squeezed.push_back(x.size(d));
  }
  return out.View(squeezed);
}

int64_t CountReduced(const Tensor& x, const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : ReductionDims("mean", x, dims)) n *= x.size(d);
  return n;
}

Tensor RandomOp(Op op, const Shape& shape, double a, double b, Generator* gen, DType dtype,
                const Device& device) {
  QUANTA_CHECK(op == Op::kBernoulli || IsFloating(dtype), OpName(op), ": dtype ", Name(dtype),
               " is not floating");
  QUANTA_CHECK(!IsQuantized(dtype), OpName(op), ": dtype ", Name(dtype), " is quantized");
  Tensor out = Tensor::Empty(shape, dtype, device);
  Generator& g = gen ? *gen : DefaultGenerator();
  OpAttrs attrs;
  attrs.scalar = a;
  attrs.scalar2 = b;
  attrs.seed = g.seed();
  attrs.offset = g.Advance(static_cast<uint64_t>(out.numel()));
  Dispatch(op, {}, {&out, 1}, attrs);
  return out;
}

}  // namespace

void Dispatch(Op op, std::span<const Tensor> inputs, std::span<Tensor> outputs,
              const OpAttrs& attrs) {
  Device device = inputs.empty() ? outputs[0].device() : inputs[0].device();
  for (const Tensor& t : inputs) {
    QUANTA_CHECK(t.device() == device, OpName(op), ": inputs on different devices (",
                 DescribeAll(inputs), ")");
  }
  for (const Tensor& t : outputs) {
    if (!t.defined()) continue;  // an output the caller does not need (fake_quantize_backward)
    QUANTA_CHECK(t.device() == device, OpName(op), ": output ", t.Describe(),
                 " is not on the inputs' device ", device.ToString());
    QUANTA_CHECK(!t.storage() || !t.storage()->constant(), OpName(op), ": output ", t.Describe(),
                 " is constant storage (Note [Constant storage] in core/storage.h)");
  }
  // Note [Storage-only dtypes]: copies (Tensor::To, Contiguous, Clone, moves
  // between devices) and the block-scaled ops alone read or write minifloats.
  if (op != Op::kCopy && op != Op::kBlockQuantize && op != Op::kBlockDequantize) {
    for (std::span<const Tensor> group : {inputs, std::span<const Tensor>(outputs.data(), outputs.size())}) {
      for (const Tensor& t : group) {
        QUANTA_CHECK(!t.defined() || !IsMiniFloat(t.dtype()), OpName(op), ": ", t.Describe(),
                     " is a storage-only dtype; convert it with to(f32) first (", DescribeAll(inputs), ")");
      }
    }
  }
  Kernel kernel = GetBackend(device).Find(op);
  QUANTA_CHECK(kernel != nullptr, OpName(op), ": not supported on ", device.ToString(), " (",
               DescribeAll(inputs), ")");
  kernel(KernelCall{op, inputs, outputs, attrs});
  Record(op, inputs, outputs, attrs);
}

// ---- elementwise ------------------------------------------------------------------

#define QUANTA_DEFINE_UNARY(Name, str)                              \
  Tensor Name(const Tensor& x) { return UnaryOp(Op::k##Name, x); }  \
  Tensor& Name##Inplace(Tensor& x) { return UnaryInplace(Op::k##Name, x); }
QUANTA_UNARY_OPS(QUANTA_DEFINE_UNARY)
#undef QUANTA_DEFINE_UNARY

#define QUANTA_DEFINE_BINARY(Name, str)                                                         \
  Tensor Name(const Tensor& a, const Tensor& b) { return BinaryOp(Op::k##Name, a, b, false); }  \
  Tensor Name(const Tensor& a, double b) { return Name(a, ScalarLike(a, b)); }                  \
  Tensor& Name##Inplace(Tensor& a, const Tensor& b) { return BinaryInplace(Op::k##Name, a, b); }
QUANTA_BINARY_OPS(QUANTA_DEFINE_BINARY)
#undef QUANTA_DEFINE_BINARY

#define QUANTA_DEFINE_COMPARE(Name, str)                                                       \
  Tensor Name(const Tensor& a, const Tensor& b) { return BinaryOp(Op::k##Name, a, b, true); }  \
  Tensor Name(const Tensor& a, double b) { return Name(a, ScalarLike(a, b)); }
QUANTA_COMPARE_OPS(QUANTA_DEFINE_COMPARE)
#undef QUANTA_DEFINE_COMPARE

Tensor Clamp(const Tensor& x, std::optional<double> lo, std::optional<double> hi) {
  QUANTA_CHECK(!lo || !hi || *lo <= *hi, "clamp: min ", *lo, " > max ", *hi, " for ", x.Describe());
  Tensor y = lo ? Maximum(x, *lo) : x;
  return hi ? Minimum(y, *hi) : (lo ? y : x.Clone());
}

Tensor& ClampInplace(Tensor& x, std::optional<double> lo, std::optional<double> hi) {
  QUANTA_CHECK(!lo || !hi || *lo <= *hi, "clamp_: min ", *lo, " > max ", *hi, " for ", x.Describe());
  if (lo) MaximumInplace(x, ScalarLike(x, *lo));
  if (hi) MinimumInplace(x, ScalarLike(x, *hi));
  return x;
}

Tensor Where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  CheckDefined("where", {&cond, &a, &b});
  auto [ab_shape, dtype] = BinaryGeometry(Op::kWhere, a, b);
  Shape shape;
  QUANTA_CHECK(TryBroadcastShapes(cond.shape(), ab_shape, &shape), "where: condition ",
               cond.Describe(), " does not broadcast with ", a.Describe(), ", ", b.Describe());
  Tensor in[3] = {cond.To(DType::kBool).Expand(shape), a.To(dtype).Expand(shape),
                  b.To(dtype).Expand(shape)};
  Tensor out = Tensor::Empty(shape, dtype, a.device());
  Dispatch(Op::kWhere, in, {&out, 1});
  return out;
}

Tensor Square(const Tensor& x) { return Mul(x, x); }

Tensor operator+(const Tensor& a, const Tensor& b) { return Add(a, b); }
Tensor operator-(const Tensor& a, const Tensor& b) { return Sub(a, b); }
Tensor operator*(const Tensor& a, const Tensor& b) { return Mul(a, b); }
Tensor operator/(const Tensor& a, const Tensor& b) { return Div(a, b); }
Tensor operator-(const Tensor& x) { return Neg(x); }
Tensor& operator+=(Tensor& a, const Tensor& b) { return AddInplace(a, b); }
Tensor& operator-=(Tensor& a, const Tensor& b) { return SubInplace(a, b); }
Tensor& operator*=(Tensor& a, const Tensor& b) { return MulInplace(a, b); }
Tensor& operator/=(Tensor& a, const Tensor& b) { return DivInplace(a, b); }

Tensor Cast(const Tensor& x, DType dtype) { return x.To(dtype); }

// ---- reductions ---------------------------------------------------------------------

Tensor Sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  DType dtype = IsFloating(x.dtype()) ? x.dtype() : DType::kI64;
  return Reduce(Op::kSum, x, dims, keepdim, dtype);
}

Tensor Mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  QUANTA_CHECK(IsFloating(x.dtype()), "mean: ", x.Describe(), " is not floating (cast it first)");
  int64_t n = CountReduced(x, dims);
  Tensor s = Sum(x, dims, keepdim);
  return Mul(s, Scalar(1.0 / static_cast<double>(n), s.dtype(), s.device()));
}

Tensor Max(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return Reduce(Op::kMax, x, dims, keepdim, x.dtype());
}

Tensor Min(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  return Reduce(Op::kMin, x, dims, keepdim, x.dtype());
}

Tensor Argmax(const Tensor& x, int64_t dim, bool keepdim) {
  return Reduce(Op::kArgmax, x, {dim}, keepdim, DType::kI64);
}

Tensor Var(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, int64_t correction) {
  QUANTA_CHECK(IsFloating(x.dtype()), "var: ", x.Describe(), " is not floating (cast it first)");
  int64_t n = CountReduced(x, dims);
  Tensor diff = Sub(x, Mean(x, dims, /*keepdim=*/true));
  Tensor ss = Sum(Mul(diff, diff), dims, keepdim);
  double denom = static_cast<double>(n - correction);
  return Mul(ss, Scalar(denom > 0 ? 1.0 / denom : NAN, ss.dtype(), ss.device()));
}

Tensor Softmax(const Tensor& x, int64_t dim) {
  QUANTA_CHECK(IsFloating(x.dtype()), "softmax: ", x.Describe(), " is not floating");
  const int d = x.dim() > 0 ? WrapDimOrNeg(dim, x.dim()) : -1;
  if (d >= 0 && GetBackend(x.device()).Supports(Op::kSoftmax)) {
    OpAttrs attrs;
    attrs.dims = {d};
    Tensor in[1] = {x.Contiguous()};
    Tensor out = Tensor::Empty(x.shape(), x.dtype(), x.device());
    Dispatch(Op::kSoftmax, in, {&out, 1}, attrs);
    return out;
  }
  // Stable: the max entry becomes exp(0). The max is a constant shift, so it is
  // taken from the detached input (its gradient would cancel anyway).
  Tensor e = Exp(Sub(x, Max(x.Detach(), {dim}, /*keepdim=*/true)));
  return Div(e, Sum(e, {dim}, /*keepdim=*/true));
}

Tensor LogSoftmax(const Tensor& x, int64_t dim) {
  QUANTA_CHECK(IsFloating(x.dtype()), "log_softmax: ", x.Describe(), " is not floating");
  Tensor shifted = Sub(x, Max(x.Detach(), {dim}, /*keepdim=*/true));
  Tensor lse = Log(Sum(Exp(shifted), {dim}, /*keepdim=*/true));
  return Sub(shifted, lse);
}

// ---- linear algebra and convolution ------------------------------------------------

namespace {

OpAttrs ConvAttrs(const Conv2dOptions& o) {
  OpAttrs attrs;
  for (int i = 0; i < 2; ++i) {
    attrs.stride[i] = o.stride[i];
    attrs.padding[i] = o.padding[i];
    attrs.dilation[i] = o.dilation[i];
  }
  attrs.groups = o.groups;
  return attrs;
}

// Under AutocastGuard, floating operands are cast to the autocast dtype.
bool Autocasts(std::initializer_list<const Tensor*> tensors) {
  std::optional<DType> amp = AutocastDType();
  if (!amp) return false;
  bool differs = false;
  for (const Tensor* t : tensors) {
    if (!t->defined()) continue;
    if (t->dtype() != DType::kF32 && t->dtype() != *amp) return false;  // f64, ints: as written
    differs = differs || t->dtype() != *amp;
  }
  return differs;
}
Tensor AutocastOperand(const Tensor& t) { return t.defined() ? t.To(*AutocastDType()) : t; }

}  // namespace

Tensor Matmul(const Tensor& a, const Tensor& b) {
  CheckDefined("matmul", {&a, &b});
  if (Autocasts({&a, &b})) return Matmul(AutocastOperand(a), AutocastOperand(b));
  CheckNotQuantized("matmul", a);
  CheckNotQuantized("matmul", b);
  QUANTA_CHECK(a.dim() >= 1 && b.dim() >= 1, "matmul: operands need at least one dim (",
               a.Describe(), ", ", b.Describe(), ")");
  QUANTA_CHECK(a.dtype() == b.dtype(), "matmul: dtypes differ (", a.Describe(), ", ",
               b.Describe(), ")");
  QUANTA_CHECK(a.dtype() != DType::kBool, "matmul: bool operands (", a.Describe(), ")");
  Tensor a2 = a.dim() == 1 ? a.Unsqueeze(0) : a;
  Tensor b2 = b.dim() == 1 ? b.Unsqueeze(1) : b;
  int64_t m = a2.size(-2), k = a2.size(-1), n = b2.size(-1);
  QUANTA_CHECK(k == b2.size(-2), "matmul: inner dims differ (", a.Describe(), " @ ",
               b.Describe(), ")");
  Shape a_batch(a2.shape().begin(), a2.shape().end() - 2);
  Shape b_batch(b2.shape().begin(), b2.shape().end() - 2);
  Shape batch;
  QUANTA_CHECK(TryBroadcastShapes(a_batch, b_batch, &batch), "matmul: batch dims do not broadcast (",
               a.Describe(), " @ ", b.Describe(), ")");
  while (a2.dim() < static_cast<int>(batch.size()) + 2) a2 = a2.Unsqueeze(0);
  while (b2.dim() < static_cast<int>(batch.size()) + 2) b2 = b2.Unsqueeze(0);
  Shape out_shape = batch;
  out_shape.push_back(m);
  out_shape.push_back(n);
  Tensor in[2] = {a2, b2};
  Tensor out = Tensor::Empty(out_shape, a.dtype(), a.device());
  Dispatch(Op::kMatmul, in, {&out, 1});
  if (a.dim() == 1) out = out.Squeeze(-2);
  if (b.dim() == 1) out = out.Squeeze(-1);
  return out;
}

namespace {
// "a, b[, c]" (c when defined) for the error messages of convolutions and
// integer GEMMs. Those ops build it only when a check fails, not on every call
// (about five allocations a convolution, on the one thread that runs between
// oneDNN's primitives: ResNet-50's batch-1 int8 forward made 4,276 mallocs,
// now 4,034; `perf stat -e probe_libc:malloc bench_infer`).
std::string DescribeOperands(const Tensor& a, const Tensor& b, const Tensor& c) {
  return absl::StrCat(a.Describe(), ", ", b.Describe(), c.defined() ? ", " + c.Describe() : "");
}
}  // namespace

Tensor Conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias,
              const Conv2dOptions& o) {
  CheckDefined("conv2d", {&input, &weight});
  if (Autocasts({&input, &weight, &bias})) {
    return Conv2d(AutocastOperand(input), AutocastOperand(weight), AutocastOperand(bias), o);
  }
  const auto args = [&] { return DescribeOperands(input, weight, bias); };
  QUANTA_CHECK(input.dim() == 4 && weight.dim() == 4, "conv2d: input (N, C, H, W) and weight (O, C/groups, KH, KW) must be 4-D (", args(), ")");
  QUANTA_CHECK(IsFloating(input.dtype()) && input.dtype() == weight.dtype() &&
                   (!bias.defined() || bias.dtype() == input.dtype()),
               "conv2d: needs one floating dtype for all operands (", args(), ")");
  QUANTA_CHECK(o.groups >= 1 && input.size(1) % o.groups == 0 && weight.size(0) % o.groups == 0 &&
                   weight.size(1) * o.groups == input.size(1),
               "conv2d: channels do not match groups=", o.groups, " (", args(), ")");
  QUANTA_CHECK(!bias.defined() || (bias.dim() == 1 && bias.size(0) == weight.size(0)),
               "conv2d: bias must have one value per output channel (", args(), ")");
  int64_t out_hw[2];
  for (int i = 0; i < 2; ++i) {
    QUANTA_CHECK(o.stride[i] >= 1 && o.dilation[i] >= 1 && o.padding[i] >= 0,
                 "conv2d: stride and dilation must be >= 1 and padding >= 0 (", args(), ")");
    int64_t span = o.dilation[i] * (weight.size(2 + i) - 1) + 1;
    out_hw[i] = (input.size(2 + i) + 2 * o.padding[i] - span) / o.stride[i] + 1;
    QUANTA_CHECK(input.size(2 + i) + 2 * o.padding[i] >= span, "conv2d: kernel larger than the padded input (", args(), ")");
  }
  OpAttrs attrs = ConvAttrs(o);
  // Channels-last input on the CPU stays so, and so does the output (oneDNN's
  // NHWC convolutions: no reorders around the call).
  const bool nhwc = input.device().is_cpu() && input.suggests_channels_last();
  std::vector<Tensor> in = {nhwc ? input : input.Contiguous(), weight.Contiguous()};
  if (bias.defined()) in.push_back(bias.Contiguous());
  Shape y_shape = {input.size(0), weight.size(0), out_hw[0], out_hw[1]};
  Tensor out = nhwc ? EmptyChannelsLast(y_shape, input.dtype(), input.device())
                    : Tensor::Empty(y_shape, input.dtype(), input.device());
  Dispatch(Op::kConv2d, in, {&out, 1}, attrs);
  return out;
}

Conv2dOptions Conv2dOptionsOf(const OpAttrs& at) {
  Conv2dOptions o;
  for (int i = 0; i < 2; ++i) {
    o.stride[i] = at.stride[i];
    o.padding[i] = at.padding[i];
    o.dilation[i] = at.dilation[i];
  }
  o.groups = at.groups;
  return o;
}

Tensor Conv2dBackwardInput(const Tensor& grad_out, const Tensor& weight, const Shape& input_shape,
                           const Conv2dOptions& o) {
  QUANTA_CHECK(grad_out.dim() == 4 && weight.dim() == 4 && input_shape.size() == 4 &&
                   grad_out.dtype() == weight.dtype(),
               "conv2d_backward_input: bad operands (", grad_out.Describe(), ", ", weight.Describe(), ")");
  const bool nhwc = grad_out.device().is_cpu() && grad_out.suggests_channels_last();
  Tensor in[2] = {nhwc ? grad_out : grad_out.Contiguous(), weight.Contiguous()};
  Tensor out = nhwc ? EmptyChannelsLast(input_shape, grad_out.dtype(), grad_out.device())
                    : Tensor::Empty(input_shape, grad_out.dtype(), grad_out.device());
  Dispatch(Op::kConv2dBackwardInput, in, {&out, 1}, ConvAttrs(o));
  return out;
}

Tensor Conv2dBackwardWeight(const Tensor& grad_out, const Tensor& input, const Shape& weight_shape,
                            const Conv2dOptions& o) {
  QUANTA_CHECK(grad_out.dim() == 4 && input.dim() == 4 && weight_shape.size() == 4 &&
                   grad_out.dtype() == input.dtype(),
               "conv2d_backward_weight: bad operands (", grad_out.Describe(), ", ", input.Describe(), ")");
  const bool nhwc = input.device().is_cpu() && input.suggests_channels_last();
  Tensor in[2] = {nhwc ? grad_out.ChannelsLast() : grad_out.Contiguous(), nhwc ? input : input.Contiguous()};
  Tensor out = Tensor::Empty(weight_shape, grad_out.dtype(), grad_out.device());
  Dispatch(Op::kConv2dBackwardWeight, in, {&out, 1}, ConvAttrs(o));
  return out;
}

Tensor MaxPool2d(const Tensor& x, const Pool2dOptions& o) {
  CheckDefined("max_pool2d", {&x});
  bool quantized = IsPerTensorInt8(x);
  QUANTA_CHECK(x.dim() == 4 && (IsFloating(x.dtype()) || quantized),
               "max_pool2d: input must be floating or per-tensor qint8/quint8 (N, C, H, W), got ", x.Describe());
  OpAttrs attrs;
  int64_t out_hw[2];
  for (int i = 0; i < 2; ++i) {
    attrs.kernel[i] = o.kernel[i];
    attrs.stride[i] = o.stride[i] > 0 ? o.stride[i] : o.kernel[i];
    attrs.padding[i] = o.padding[i];
    attrs.dilation[i] = o.dilation[i];
    QUANTA_CHECK(o.kernel[i] >= 1 && attrs.stride[i] >= 1 && o.dilation[i] >= 1 &&
                     o.padding[i] >= 0 && 2 * o.padding[i] <= o.kernel[i],
                 "max_pool2d: bad kernel/stride/padding/dilation for ", x.Describe(),
                 " (padding must be at most half the kernel)");
    int64_t span = o.dilation[i] * (o.kernel[i] - 1) + 1;
    QUANTA_CHECK(x.size(2 + i) + 2 * o.padding[i] >= span, "max_pool2d: window larger than the padded input ",
                 x.Describe());
    out_hw[i] = (x.size(2 + i) + 2 * o.padding[i] - span) / attrs.stride[i] + 1;
  }
  Shape shape = {x.size(0), x.size(1), out_hw[0], out_hw[1]};
  // Channels-last input stays so (and so does the output): no layout change.
  bool channels_last = x.suggests_channels_last();
  Tensor in = channels_last ? x : x.Contiguous();
  Shape alloc = channels_last ? Shape{shape[0], shape[2], shape[3], shape[1]} : shape;
  // The argmax is only read by the backward: in inference it is not computed
  // (Note [Max pooling without indices] in backends/cpu/reference_indexing.cc).
  bool indices = GradModeEnabled() && x.requires_grad();
  Tensor out[2] = {quantized ? Tensor::Empty(alloc, x.dtype(), x.device(), x.qparams())
                             : Tensor::Empty(alloc, x.dtype(), x.device()),
                   indices ? Tensor::Empty(alloc, DType::kI64, x.device()) : Tensor()};
  if (channels_last) {
    for (Tensor& t : out) {
      if (t.defined()) t = t.Permute({0, 3, 1, 2});
    }
  }
  Dispatch(Op::kMaxPool2d, {&in, 1}, out, attrs);
  return out[0];
}

Tensor MaxPool2dBackward(const Tensor& grad_out, const Tensor& indices, const Shape& input_shape) {
  QUANTA_CHECK(grad_out.shape() == indices.shape() && indices.dtype() == DType::kI64 &&
                   input_shape.size() == 4,
               "max_pool2d_backward: bad operands (", grad_out.Describe(), ", ", indices.Describe(), ")");
  Tensor in[2] = {grad_out.Contiguous(), indices.Contiguous()};
  Tensor out = Tensor::Empty(input_shape, grad_out.dtype(), grad_out.device());
  Dispatch(Op::kMaxPool2dBackward, in, {&out, 1});
  return out;
}

namespace {
DType BatchNormStatsDType(DType x) { return x == DType::kF64 ? DType::kF64 : DType::kF32; }
void CheckBatchNormChannel(const char* op, const Tensor& x, const Tensor& t, const char* what, DType dtype) {
  QUANTA_CHECK(t.defined() && t.shape() == Shape{x.size(1)} && t.dtype() == dtype, op, ": ", what, " must be ",
               Name(dtype), "[", x.size(1), "] for input ", x.Describe(), ", got ",
               t.defined() ? t.Describe() : std::string("undefined"));
}
void CheckBatchNormResidual(const char* op, const Tensor& x, const Tensor& residual) {
  QUANTA_CHECK(!residual.defined() || (residual.shape() == x.shape() && residual.dtype() == x.dtype() &&
                                       residual.device() == x.device()),
               op, ": residual must match the input ", x.Describe(), ", got ", residual.Describe());
}
}  // namespace

std::array<Tensor, 3> BatchNormTraining(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                                        const Tensor& residual, bool relu) {
  CheckDefined("batch_norm", {&x});
  QUANTA_CHECK(x.dim() == 4 && IsFloating(x.dtype()), "batch_norm: input must be floating (N, C, H, W), got ",
               x.Describe());
  QUANTA_CHECK(x.numel() / std::max<int64_t>(x.size(1), 1) > 1,
               "batch_norm: training needs more than one value per channel, got ", x.Describe());
  QUANTA_CHECK(eps >= 0, "batch_norm: negative eps ", eps);
  CheckBatchNormChannel("batch_norm", x, weight, "weight", x.dtype());
  CheckBatchNormChannel("batch_norm", x, bias, "bias", x.dtype());
  CheckBatchNormResidual("batch_norm", x, residual);
  OpAttrs attrs;
  attrs.scalar = eps;
  attrs.residual = residual.defined();
  attrs.relu = relu;
  // Channels-last x on the CPU stays so, and so does y (the kernel's row loops;
  // the CUDA kernel reads contiguous planes); a residual is laid out as x.
  const bool channels_last = x.device().is_cpu() && x.suggests_channels_last();
  std::vector<Tensor> in = {channels_last ? x : x.Contiguous(), weight.Contiguous(), bias.Contiguous()};
  if (residual.defined()) in.push_back(channels_last ? residual.ChannelsLast() : residual.Contiguous());
  DType stats = BatchNormStatsDType(x.dtype());
  std::array<Tensor, 3> out = {EmptyElementwise(x.shape(), x.dtype(), x.device(), {&in[0]}),
                               Tensor::Empty({x.size(1)}, stats, x.device()),
                               Tensor::Empty({x.size(1)}, stats, x.device())};
  Dispatch(Op::kBatchNorm, in, out, attrs);
  return out;
}

namespace {
// Both backward forms: in = {grad_y, x, weight, mean, var} and, with relu,
// bias and the residual where there is one; out = {grad x, grad weight, grad
// bias} and, with relu and a residual, grad residual.
std::array<Tensor, 4> BatchNormBackwardOf(const char* op, const Tensor& grad_y, const Tensor& x, const Tensor& weight,
                                          const Tensor* bias, const Tensor& mean, const Tensor& var, double eps,
                                          const Tensor& residual) {
  CheckDefined(op, {&grad_y, &x});
  QUANTA_CHECK(x.dim() == 4 && IsFloating(x.dtype()) && grad_y.shape() == x.shape() && grad_y.dtype() == x.dtype(),
               op, ": bad operands (", grad_y.Describe(), ", ", x.Describe(), ")");
  CheckBatchNormChannel(op, x, weight, "weight", x.dtype());
  if (bias) CheckBatchNormChannel(op, x, *bias, "bias", x.dtype());
  CheckBatchNormChannel(op, x, mean, "mean", BatchNormStatsDType(x.dtype()));
  CheckBatchNormChannel(op, x, var, "var", BatchNormStatsDType(x.dtype()));
  CheckBatchNormResidual(op, x, residual);
  OpAttrs attrs;
  attrs.scalar = eps;
  attrs.relu = bias != nullptr;
  attrs.residual = residual.defined();
  const bool channels_last = x.device().is_cpu() && x.suggests_channels_last();
  auto like_x = [&](const Tensor& t) { return channels_last ? t.ChannelsLast() : t.Contiguous(); };
  std::vector<Tensor> in = {like_x(grad_y), channels_last ? x : x.Contiguous(), weight.Contiguous(),
                            mean.Contiguous(), var.Contiguous()};
  if (bias) in.push_back(bias->Contiguous());
  if (residual.defined()) in.push_back(like_x(residual));
  std::array<Tensor, 4> out = {EmptyElementwise(x.shape(), x.dtype(), x.device(), {&in[1]}),
                               Tensor::Empty({x.size(1)}, x.dtype(), x.device()),
                               Tensor::Empty({x.size(1)}, x.dtype(), x.device()), Tensor()};
  if (residual.defined()) out[3] = EmptyElementwise(x.shape(), x.dtype(), x.device(), {&in[1]});
  Dispatch(Op::kBatchNormBackward, in, {out.data(), residual.defined() ? 4u : 3u}, attrs);
  return out;
}
}  // namespace

std::array<Tensor, 3> BatchNormBackward(const Tensor& grad_y, const Tensor& x, const Tensor& weight,
                                        const Tensor& mean, const Tensor& var, double eps) {
  std::array<Tensor, 4> r = BatchNormBackwardOf("batch_norm_backward", grad_y, x, weight, nullptr, mean, var, eps, {});
  return {r[0], r[1], r[2]};
}

std::array<Tensor, 4> BatchNormReluBackward(const Tensor& grad_y, const Tensor& x, const Tensor& weight,
                                            const Tensor& bias, const Tensor& mean, const Tensor& var, double eps,
                                            const Tensor& residual) {
  return BatchNormBackwardOf("batch_norm_backward (relu)", grad_y, x, weight, &bias, mean, var, eps, residual);
}

std::array<Tensor, 3> NativeLayerNorm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  CheckDefined("layer_norm", {&x, &weight, &bias});
  const int k = weight.dim();
  QUANTA_CHECK(IsFloating(x.dtype()) && k >= 1 && x.dim() >= k &&
                   Shape(x.shape().end() - k, x.shape().end()) == weight.shape(),
               "layer_norm: input ", x.Describe(), " must be floating and end in the weight's shape ",
               weight.Describe());
  QUANTA_CHECK(weight.dtype() == x.dtype() && bias.shape() == weight.shape() && bias.dtype() == x.dtype(),
               "layer_norm: weight and bias must be ", Name(x.dtype()), ShapeToString(weight.shape()),
               " for input ", x.Describe(), ", got ", weight.Describe(), " and ", bias.Describe());
  QUANTA_CHECK(eps >= 0, "layer_norm: negative eps ", eps);
  OpAttrs attrs;
  attrs.scalar = eps;
  Tensor in[3] = {x.Contiguous(), weight.Contiguous(), bias.Contiguous()};
  Shape stats_shape = x.shape();
  for (int d = x.dim() - k; d < x.dim(); ++d) stats_shape[d] = 1;
  const DType stats = x.dtype() == DType::kF64 ? DType::kF64 : DType::kF32;
  std::array<Tensor, 3> out = {Tensor::Empty(x.shape(), x.dtype(), x.device()),
                               Tensor::Empty(stats_shape, stats, x.device()),
                               Tensor::Empty(stats_shape, stats, x.device())};
  Dispatch(Op::kLayerNorm, in, out, attrs);
  return out;
}

Tensor ScatterAdd(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& src) {
  int d = WrapDimOrNeg(dim, static_cast<int64_t>(shape.size()));
  QUANTA_CHECK(d >= 0 && IsIntegral(index.dtype()) && index.shape() == src.shape() &&
                   src.dim() == static_cast<int>(shape.size()),
               "scatter_add: bad operands (shape ", ShapeToString(shape), ", dim ", dim, ", ",
               index.Describe(), ", ", src.Describe(), ")");
  Tensor out = Zeros(shape, src.dtype(), src.device());
  OpAttrs attrs;
  attrs.dims = {d};
  Tensor in[2] = {src, index.To(DType::kI64)};
  Dispatch(Op::kScatterAdd, in, {&out, 1}, attrs);
  return out;
}

// ---- quantization --------------------------------------------------------------------

std::pair<int64_t, int64_t> QuantRange(DType dtype, const QuantParams& p) {
  const DTypeInfo& info = Info(dtype);
  if (p.quant_min == 0 && p.quant_max == 0) return {info.qmin, info.qmax};
  QUANTA_CHECK(IsQuantized(dtype) && p.quant_min < p.quant_max && p.quant_min >= info.qmin && p.quant_max <= info.qmax,
               "quantize: range [", p.quant_min, ", ", p.quant_max, "] does not fit ", Name(dtype), " [", info.qmin,
               ", ", info.qmax, "]");
  return {p.quant_min, p.quant_max};
}

namespace {
// Per-tensor or per-channel values as an f64 tensor spread over `shape`.
Tensor SpreadParams(const std::vector<double>& values, const QuantParams& p, const Shape& shape, const Device& device) {
  Tensor t = Tensor::FromVector<double>(values, {static_cast<int64_t>(values.size())}).To(device);
  Shape along(shape.size(), 1);
  if (p.scheme == QScheme::kPerChannel) along[p.axis] = static_cast<int64_t>(values.size());
  return (shape.empty() ? t.View({}) : t.View(along)).Expand(shape);
}
std::vector<double> AsDoubles(const std::vector<int64_t>& v) { return {v.begin(), v.end()}; }
}  // namespace

Tensor Quantize(const Tensor& x, DType dtype, const QuantParams& params) {
  CheckDefined("quantize", {&x});
  QUANTA_CHECK(IsFloating(x.dtype()) && IsQuantized(dtype), "quantize: needs a floating input and a quantized dtype, got ",
               x.Describe(), " to ", Name(dtype));
  auto [qmin, qmax] = QuantRange(dtype, params);
  Tensor out = Tensor::Empty(x.shape(), dtype, x.device(), params);
  OpAttrs attrs;
  attrs.quant_min = static_cast<double>(qmin);
  attrs.quant_max = static_cast<double>(qmax);
  Tensor in[3] = {x, SpreadParams(params.scales, params, x.shape(), x.device()),
                  SpreadParams(AsDoubles(params.zero_points), params, x.shape(), x.device())};
  Dispatch(Op::kQuantize, in, {&out, 1}, attrs);
  return out;
}

Tensor Dequantize(const Tensor& q, DType dtype) {
  CheckDefined("dequantize", {&q});
  QUANTA_CHECK(q.is_quantized() && IsFloating(dtype), "dequantize: needs a quantized input and a floating dtype, got ",
               q.Describe(), " to ", Name(dtype));
  const QuantParams& p = q.qparams();
  Tensor out = Tensor::Empty(q.shape(), dtype, q.device());
  Tensor in[3] = {q, SpreadParams(p.scales, p, q.shape(), q.device()),
                  SpreadParams(AsDoubles(p.zero_points), p, q.shape(), q.device())};
  Dispatch(Op::kDequantize, in, {&out, 1});
  return out;
}

Tensor Requantize(const Tensor& q, DType dtype, const QuantParams& params) {
  return Quantize(Dequantize(q, DType::kF64), dtype, params);
}

namespace {
// One value per channel along `axis` (or one value, axis -1) spread to x's
// shape with stride 0: what the fake-quantize kernels read.
Tensor SpreadAlong(const Tensor& per_channel, const Tensor& x, int64_t axis) {
  if (x.dim() == 0) return per_channel.View({});
  Shape along(x.dim(), 1);
  if (axis >= 0) along[axis] = x.size(axis);
  return per_channel.View(along).Expand(x.shape());
}

// fake_quantize_backward with the scale and zero-point gradients shaped
// `param_shape`: x's shape (per element) or (C) (summed by the CPU kernel).
std::array<Tensor, 3> FakeQuantizeBackwardInto(const Tensor& grad, const Tensor& x, const Tensor& scale,
                                               const Tensor& zero_point, const OpAttrs& attrs,
                                               std::array<bool, 3> needed, const Shape& param_shape) {
  QUANTA_CHECK(grad.shape() == x.shape() && scale.shape() == x.shape() && zero_point.shape() == x.shape() &&
                   grad.dtype() == x.dtype() && scale.dtype() == x.dtype() && zero_point.dtype() == x.dtype(),
               "fake_quantize_backward: operands differ (", grad.Describe(), ", ", x.Describe(), ", ",
               scale.Describe(), ", ", zero_point.Describe(), ")");
  QUANTA_CHECK(needed[0] || needed[1] || needed[2], "fake_quantize_backward: no gradient asked for");
  Tensor in[4] = {grad, x, scale, zero_point};
  std::array<Tensor, 3> out;
  if (needed[0]) out[0] = EmptyElementwise(x.shape(), x.dtype(), x.device(), {&x});  // x's layout
  for (int i = 1; i < 3; ++i) {
    if (needed[i]) {
      out[i] = param_shape == x.shape() ? EmptyElementwise(x.shape(), x.dtype(), x.device(), {&x})
                                        : Tensor::Empty(param_shape, x.dtype(), x.device());
    }
  }
  // Kernels skip the outputs left undefined.
  Dispatch(Op::kFakeQuantizeBackward, in, out, attrs);
  return out;
}
}  // namespace

Tensor FakeQuantize(const Tensor& x, const Tensor& scale, const Tensor& zero_point, const FakeQuantOptions& o) {
  CheckDefined("fake_quantize", {&x, &scale, &zero_point});
  QUANTA_CHECK(IsFloating(x.dtype()), "fake_quantize: ", x.Describe(), " is not floating");
  QUANTA_CHECK(o.quant_min < o.quant_max, "fake_quantize: empty range [", o.quant_min, ", ", o.quant_max, "]");
  QUANTA_CHECK(o.gradient == FakeQuantGradient::kSte || o.ewgs_delta >= 0, "fake_quantize: negative EWGS delta ",
               o.ewgs_delta);
  int64_t channels = 1;
  if (o.axis >= 0) {
    QUANTA_CHECK(o.axis < x.dim(), "fake_quantize: axis ", o.axis, " out of range for ", x.Describe());
    channels = x.size(o.axis);
  }
  QUANTA_CHECK(scale.numel() == channels && zero_point.numel() == channels, "fake_quantize: ", channels,
               " scale and zero point values expected, got ", scale.Describe(), ", ", zero_point.Describe(), " for ",
               x.Describe());
  OpAttrs attrs;
  attrs.quant_min = static_cast<double>(o.quant_min);
  attrs.quant_max = static_cast<double>(o.quant_max);
  attrs.fake_quant_gradient = static_cast<int>(o.gradient);
  attrs.ewgs_delta = o.ewgs_delta;
  attrs.lsq_grad_scale = o.lsq_grad_scale;
  attrs.dims = {o.axis};
  // Note [Fake-quant parameter sums]: the node records the parameters as given,
  // one value per channel, and the kernel reads them spread to x's shape
  // (stride 0) through views the graph does not see. The backward rule then
  // returns their gradients already summed per channel
  // (FakeQuantizeBackwardSummed), which the CPU kernel does in its one pass:
  // recording the spread views instead would write x-sized scale and zero-point
  // gradients (LSQ) for the expand nodes to read back and sum.
  Tensor params[2] = {scale.To(x.dtype()).Reshape({channels}), zero_point.To(x.dtype()).Reshape({channels})};
  Tensor out = EmptyElementwise(x.shape(), x.dtype(), x.device(), {&x});  // channels-last stays so
  {
    NoGradGuard no_grad;
    Tensor in[3] = {x, SpreadAlong(params[0], x, o.axis), SpreadAlong(params[1], x, o.axis)};
    Dispatch(Op::kFakeQuantize, in, {&out, 1}, attrs);
  }
  Tensor recorded[3] = {x, params[0], params[1]};
  Record(Op::kFakeQuantize, recorded, {&out, 1}, attrs);
  return out;
}

std::array<Tensor, 3> FakeQuantizeBackward(const Tensor& grad, const Tensor& x, const Tensor& scale,
                                           const Tensor& zero_point, const OpAttrs& attrs,
                                           std::array<bool, 3> needed) {
  return FakeQuantizeBackwardInto(grad, x, scale, zero_point, attrs, needed, x.shape());
}

std::array<Tensor, 3> FakeQuantizeBackwardSummed(const Tensor& grad, const Tensor& x, const Tensor& scale,
                                                 const Tensor& zero_point, const OpAttrs& attrs,
                                                 std::array<bool, 3> needed) {
  const int64_t axis = attrs.dims.empty() ? -1 : attrs.dims[0];
  QUANTA_CHECK(axis < x.dim(), "fake_quantize_backward: axis ", axis, " out of range for ", x.Describe());
  const int64_t channels = axis >= 0 ? x.size(axis) : 1;
  QUANTA_CHECK(scale.numel() == channels && zero_point.numel() == channels, "fake_quantize_backward: ", channels,
               " scale and zero point values expected, got ", scale.Describe(), ", ", zero_point.Describe(), " for ",
               x.Describe());
  const Tensor s = SpreadAlong(scale.Reshape({channels}), x, axis), z = SpreadAlong(zero_point.Reshape({channels}), x, axis);
  // The CPU kernel sums in its pass where x and grad are dense and alike (its
  // channel runs); a gradient of x, when asked for, follows x's layout.
  const bool fused = x.device().is_cpu() && needed[1] && grad.strides() == x.strides() &&
                     (x.is_contiguous() || x.suggests_channels_last());
  if (fused) return FakeQuantizeBackwardInto(grad, x, s, z, attrs, needed, {channels});
  std::array<Tensor, 3> out = FakeQuantizeBackwardInto(grad, x, s, z, attrs, needed, x.shape());
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (d != axis) dims.push_back(d);
  }
  for (int i = 1; i < 3; ++i) {
    if (out[i].defined()) out[i] = Sum(out[i], dims).Reshape({channels});
  }
  return out;
}

namespace {
// Re-stores q's integer values in another quantized container (same parameters).
Tensor Restore(const char* op, const Tensor& q, DType from, DType to) {
  QUANTA_CHECK(q.defined() && q.dtype() == from, op, ": expected a ", Name(from), " tensor, got ", q.Describe());
  QuantParams p = q.qparams();
  const DTypeInfo& info = Info(to);
  // The 4-bit range travels with the values: qint8 holding qint4 values says so,
  // and a full qint4 range is the default again once packed.
  if (p.quant_min == 0 && p.quant_max == 0 && to == DType::kQInt8) p = p.WithRange(Info(from).qmin, Info(from).qmax);
  if (to == DType::kQInt4 && p.quant_min == info.qmin && p.quant_max == info.qmax) p = p.WithRange(0, 0);
  for (int32_t v : q.IntRepr()) {
    QUANTA_CHECK(v >= info.qmin && v <= info.qmax, op, ": value ", v, " does not fit ", info.name);
  }
  return Tensor::FromQuantized(q.IntRepr(), q.shape(), to, p, q.device());
}

// The output of an integer op: f32, or quint8/qint8 with per-tensor parameters.
Tensor IntegerOutput(const char* op, const Shape& shape, DType dtype, const QuantParams* params, const Device& device,
                     absl::FunctionRef<std::string()> args) {
  QUANTA_CHECK(dtype == DType::kF32 || (IsInt8(dtype) && params && params->scheme == QScheme::kPerTensor),
               op, ": output is f32, or quint8/qint8 with per-tensor parameters (", args(), ")");
  return dtype == DType::kF32 ? Tensor::Empty(shape, dtype, device) : Tensor::Empty(shape, dtype, device, *params);
}
}  // namespace

// ---- block-scaled minifloats --------------------------------------------------------

double BlockFormat::BitsPerElement() const {
  return Info(element).bits + static_cast<double>(Info(scale).bits) / static_cast<double>(rows * cols);
}

std::string BlockFormat::ToString() const {
  return absl::StrCat(Name(element), " ", rows, "x", cols, " ", Name(scale));
}

namespace {
// The scales' shape: x's with the last two dims (the last, for a vector) divided
// by the block's; checks that they divide.
Shape BlockScalesShape(const char* op, const Shape& shape, const BlockFormat& f) {
  QUANTA_CHECK(!shape.empty() && (f.rows == 1 || shape.size() >= 2), op, ": ", ShapeToString(shape),
               " has no ", f.rows, " x ", f.cols, " blocks (", f.ToString(), ")");
  Shape s = shape;
  const size_t last = shape.size() - 1;
  QUANTA_CHECK(shape[last] % f.cols == 0, op, ": the last dim of ", ShapeToString(shape), " (", shape[last],
               ") is not a multiple of the block's ", f.cols, " columns (", f.ToString(), ")");
  s[last] /= f.cols;
  if (f.rows > 1) {
    QUANTA_CHECK(shape[last - 1] % f.rows == 0, op, ": dim ", last - 1, " of ", ShapeToString(shape), " (",
                 shape[last - 1], ") is not a multiple of the block's ", f.rows, " rows (", f.ToString(), ")");
    s[last - 1] /= f.rows;
  }
  return s;
}

void CheckBlockFormat(const char* op, const BlockFormat& f) {
  QUANTA_CHECK(IsMiniFloat(f.element) && f.element != DType::kF8E8M0, op, ": elements ", Name(f.element),
               " are not a minifloat element type (f8_e4m3, f8_e5m2, f6_e2m3, f6_e3m2, f4_e2m1)");
  QUANTA_CHECK(f.scale == DType::kF32 || f.scale == DType::kF8E8M0 || f.scale == DType::kF8E4M3, op, ": scale dtype ",
               Name(f.scale), " is not f32, f8_e8m0 or f8_e4m3");
  QUANTA_CHECK(f.rows >= 1 && f.cols >= 1, op, ": block ", f.rows, " x ", f.cols, " is empty");
}

OpAttrs BlockAttrs(const BlockFormat& f) {
  OpAttrs attrs;
  attrs.block[0] = f.rows;
  attrs.block[1] = f.cols;
  return attrs;
}
}  // namespace

BlockQuantized BlockQuantize(const Tensor& x, const BlockFormat& format) {
  CheckDefined("block_quantize", {&x});
  CheckBlockFormat("block_quantize", format);
  QUANTA_CHECK(IsFloating(x.dtype()) && !IsMiniFloat(x.dtype()), "block_quantize: needs a floating input, got ",
               x.Describe());
  Shape scales_shape = BlockScalesShape("block_quantize", x.shape(), format);
  BlockQuantized q;
  q.format = format;
  // NVFP4's per-tensor scale puts the largest block scale at E4M3's largest value.
  double g = 1;
  if (format.scale == DType::kF8E4M3) {
    NoGradGuard no_grad;
    double amax = Max(Abs(x.To(DType::kF32))).item<float>();
    g = amax > 0 && std::isfinite(amax) ? amax / (MiniFloatOf(DType::kF8E4M3).max * MiniFloatOf(format.element).max)
                                        : 1.0;
  }
  q.tensor_scale = Full({}, g, DType::kF32, x.device());
  q.codes = Tensor::Empty(x.shape(), format.element, x.device());
  q.scales = Tensor::Empty(scales_shape, format.scale, x.device());
  Tensor in[2] = {x.Contiguous(), q.tensor_scale};
  Tensor out[2] = {q.codes, q.scales};
  Dispatch(Op::kBlockQuantize, in, out, BlockAttrs(format));
  return q;
}

Tensor BlockDequantize(const BlockQuantized& q, DType dtype) {
  CheckDefined("block_dequantize", {&q.codes, &q.scales, &q.tensor_scale});
  CheckBlockFormat("block_dequantize", q.format);
  QUANTA_CHECK(IsFloating(dtype) && !IsMiniFloat(dtype) && q.codes.dtype() == q.format.element &&
                   q.scales.dtype() == q.format.scale && q.tensor_scale.dtype() == DType::kF32 &&
                   q.tensor_scale.numel() == 1 &&
                   BlockScalesShape("block_dequantize", q.codes.shape(), q.format) == q.scales.shape(),
               "block_dequantize: codes ", q.codes.Describe(), ", scales ", q.scales.Describe(), " and tensor scale ",
               q.tensor_scale.Describe(), " are not one ", q.format.ToString(), " tensor, or ", Name(dtype),
               " is not a floating dtype");
  Tensor out = Tensor::Empty(q.codes.shape(), dtype, q.codes.device());
  Tensor in[3] = {q.codes.Contiguous(), q.scales.Contiguous(), q.tensor_scale};
  Dispatch(Op::kBlockDequantize, in, {&out, 1}, BlockAttrs(q.format));
  return out;
}

Tensor BlockFakeQuantize(const Tensor& x, const BlockFormat& format) {
  Tensor y;
  {
    NoGradGuard no_grad;
    y = BlockDequantize(BlockQuantize(x, format), x.dtype());
  }
  if (!x.requires_grad() || !GradModeEnabled()) return y;
  // y's value exactly (x - x is 0), x's gradient.
  return Add(y, Sub(x, x.Detach()));
}

Tensor UnpackQInt4(const Tensor& q) { return Restore("unpack_qint4", q, DType::kQInt4, DType::kQInt8); }
Tensor PackQInt4(const Tensor& q) { return Restore("pack_qint4", q, DType::kQInt8, DType::kQInt4); }

namespace {

// Checks the post-ops against the output and appends the residual to the inputs.
void AddPostOps(const char* op, const IntegerPostOps& post, const Tensor& y, absl::FunctionRef<std::string()> args,
                std::vector<Tensor>& in, OpAttrs& attrs) {
  attrs.relu = post.relu;
  attrs.gelu = post.gelu;
  attrs.varying_input_scale = post.varying_input_scale;
  QUANTA_CHECK(!post.gelu || (!post.relu && !post.residual.defined()), op,
               ": the GELU post-op comes alone, without ReLU or a residual (", args(), ")");
  if (!post.residual.defined()) return;
  const Tensor& r = post.residual;
  QUANTA_CHECK((r.dtype() == DType::kF32 || IsPerTensorInt8(r)) && r.shape() == y.shape() && r.device() == y.device(), op,
               ": the residual must be f32 or per-tensor quint8/qint8 of the output's shape ", ShapeToString(y.shape()),
               " (", args(), ", residual ", r.Describe(), ")");
  attrs.residual = true;
  in.push_back(r.is_channels_last() && y.is_channels_last() ? r : r.Contiguous());
}

bool IsIntegerWeight(DType d) { return d == DType::kQInt8 || d == DType::kQInt4; }

}  // namespace

Tensor QuantizedMatmul(const Tensor& a, const Tensor& b, const Tensor& bias, DType out_dtype, const QuantParams* out,
                       const IntegerPostOps& post) {
  CheckDefined("quantized_matmul", {&a, &b});
  const auto args = [&] { return DescribeOperands(a, b, bias); };
  QUANTA_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(0), "quantized_matmul: needs (M, K) @ (K, N) (", args(), ")");
  QUANTA_CHECK(IsInt8(a.dtype()) && IsIntegerWeight(b.dtype()),
               "quantized_matmul: needs quint8/qint8 activations and qint8/qint4 weights (", args(), ")");
  QUANTA_CHECK(a.qparams().scheme == QScheme::kPerTensor &&
                   (b.qparams().scheme == QScheme::kPerTensor || b.qparams().axis == 1),
               "quantized_matmul: activations per tensor, weights per tensor or per output column (", args(), ")");
  QUANTA_CHECK(!bias.defined() || (bias.dtype() == DType::kF32 && bias.dim() == 1 && bias.size(0) == b.size(1)),
               "quantized_matmul: bias must be f32 (N) (", args(), ")");
  Tensor y = IntegerOutput("quantized_matmul", {a.size(0), b.size(1)}, out_dtype, out, a.device(), args);
  std::vector<Tensor> in = {a.Contiguous(), b.Contiguous()};
  if (bias.defined()) in.push_back(bias.Contiguous());
  OpAttrs attrs;
  AddPostOps("quantized_matmul", post, y, args, in, attrs);
  Dispatch(Op::kQuantizedMatmul, in, {&y, 1}, attrs);
  return y;
}

Tensor QuantizedConv2d(const Tensor& x_in, const Tensor& w, const Tensor& bias, const Conv2dOptions& o, DType out_dtype,
                       const QuantParams* out, const IntegerPostOps& post) {
  CheckDefined("quantized_conv2d", {&x_in, &w});
  const auto args = [&] { return DescribeOperands(x_in, w, bias); };
  QUANTA_CHECK(x_in.dim() == 4 && w.dim() == 4 && IsInt8(x_in.dtype()) && IsIntegerWeight(w.dtype()),
               "quantized_conv2d: needs quint8/qint8 (N, C, H, W) input and qint8/qint4 (O, C/G, KH, KW) weights (", args(), ")");
  QUANTA_CHECK(x_in.qparams().scheme == QScheme::kPerTensor &&
                   (w.qparams().scheme == QScheme::kPerTensor || w.qparams().axis == 0),
               "quantized_conv2d: input per tensor, weights per tensor or per output channel (", args(), ")");
  int64_t any_zero_point = 0;  // an OR over the channels: a loop that vectorizes (ResNet-50: 26,560 a forward)
  for (int64_t z : w.qparams().zero_points) any_zero_point |= z;
  QUANTA_CHECK(any_zero_point == 0, "quantized_conv2d: weights must be symmetric (zero points 0) (", args(), ")");
  QUANTA_CHECK(o.groups >= 1 && w.size(1) * o.groups == x_in.size(1) && w.size(0) % o.groups == 0,
               "quantized_conv2d: channels do not match groups=", o.groups, " (", args(), ")");
  QUANTA_CHECK(!bias.defined() || (bias.dtype() == DType::kF32 && bias.dim() == 1 && bias.size(0) == w.size(0)),
               "quantized_conv2d: bias must be f32 (O) (", args(), ")");

  int64_t out_hw[2];
  for (int i = 0; i < 2; ++i) {
    int64_t span = o.dilation[i] * (w.size(2 + i) - 1) + 1;
    QUANTA_CHECK(o.stride[i] >= 1 && o.dilation[i] >= 1 && o.padding[i] >= 0 && x_in.size(2 + i) + 2 * o.padding[i] >= span,
                 "quantized_conv2d: bad stride, dilation or padding (", args(), ")");
    out_hw[i] = (x_in.size(2 + i) + 2 * o.padding[i] - span) / o.stride[i] + 1;
  }
  bool channels_last = x_in.is_channels_last();
  Tensor x = channels_last ? x_in : x_in.Contiguous();
  Shape shape = {x.size(0), w.size(0), out_hw[0], out_hw[1]};
  Tensor y = IntegerOutput("quantized_conv2d", channels_last ? Shape{shape[0], shape[2], shape[3], shape[1]} : shape,
                           out_dtype, out, x.device(), args);
  if (channels_last) y = y.Permute({0, 3, 1, 2});
  std::vector<Tensor> in = {x, w.Contiguous()};
  if (bias.defined()) in.push_back(bias.Contiguous());
  OpAttrs attrs = ConvAttrs(o);
  AddPostOps("quantized_conv2d", post, y, args, in, attrs);
  Dispatch(Op::kQuantizedConv2d, in, {&y, 1}, attrs);
  return y;
}

// ---- joining and indexing ---------------------------------------------------------

Tensor Concat(const std::vector<Tensor>& tensors, int64_t dim) {
  QUANTA_CHECK(!tensors.empty(), "concat: no tensors");
  const Tensor& first = tensors[0];
  int d = WrapDimOrNeg(dim, first.dim());
  QUANTA_CHECK(d >= 0, "concat: dim ", dim, " out of range for ", first.Describe());
  DType dtype = first.dtype();
  int64_t total = 0;
  for (const Tensor& t : tensors) {
    CheckNotQuantized("concat", t);
    bool same = t.dim() == first.dim();
    for (int i = 0; same && i < t.dim(); ++i) same = i == d || t.size(i) == first.size(i);
    QUANTA_CHECK(same, "concat: shapes differ outside dim ", d, " (", DescribeAll(tensors), ")");
    dtype = PromoteTypes(dtype, t.dtype());
    total += t.size(d);
  }
  Shape shape = first.shape();
  shape[d] = total;
  // Note [Channels-last concat]: 4-D inputs whose channels all lie innermost in
  // memory (channels-last tensors, slices of them) give a channels-last output,
  // so that each input's copy runs along its channels and what reads the output
  // next finds the layout the convolutions use. ResNet-20's option-A shortcut
  // (a subsampled channels-last activation between two channels-last zero pads)
  // was concatenated into NCHW, then copied to channels-last by batch norm,
  // which reads it as its residual: both copies strided and scalar loops (with
  // the slice's gradient, Note [Channels-last slice gradients] in
  // autograd/derivatives.cc, the copy kernel was 1.5% of a training step's
  // samples, now 0.4% and 0.7% in memcpy; perf, bench_nn). Otherwise
  // contiguous, as before.
  auto channels_inner = [](const Tensor& t) { return t.size(1) == 1 || t.size(2) * t.size(3) == 1 || t.stride(1) == 1; };
  const bool channels_last =
      shape.size() == 4 && std::all_of(tensors.begin(), tensors.end(), channels_inner) &&
      std::any_of(tensors.begin(), tensors.end(), [](const Tensor& t) { return t.size(1) > 1 && t.size(2) * t.size(3) > 1; });
  Tensor out = channels_last ? EmptyChannelsLast(shape, dtype, first.device()) : Tensor::Empty(shape, dtype, first.device());
  {
    NoGradGuard no_grad;  // the copies into views are recorded as one concat below
    int64_t offset = 0;
    for (const Tensor& t : tensors) {
      out.Narrow(d, offset, t.size(d)).CopyFrom(t);
      offset += t.size(d);
    }
  }
  OpAttrs attrs;
  attrs.dims = {d};
  Record(Op::kConcat, tensors, {&out, 1}, attrs);
  return out;
}

Tensor Stack(const std::vector<Tensor>& tensors, int64_t dim) {
  QUANTA_CHECK(!tensors.empty(), "stack: no tensors");
  int d = WrapDimOrNeg(dim, tensors[0].dim() + 1);
  QUANTA_CHECK(d >= 0, "stack: dim ", dim, " out of range for ", tensors[0].Describe());
  std::vector<Tensor> expanded;
  for (const Tensor& t : tensors) {
    QUANTA_CHECK(t.shape() == tensors[0].shape(), "stack: shapes differ (", DescribeAll(tensors), ")");
    expanded.push_back(t.Unsqueeze(d));
  }
  return Concat(expanded, d);
}

namespace {
// A 1-D index as a view along `dim` of `shape`, stride 0 elsewhere: index_select
// is gather with it, index_add is scatter_add with it.
// `size` is the indexed dim's extent; `indexed` names that tensor in errors.
Tensor SpreadIndex(const char* op, const Tensor& index, int64_t d, const Shape& shape, int64_t size,
                   const std::string& indexed) {
  QUANTA_CHECK(index.dim() == 1 && IsIntegral(index.dtype()), op, ": index must be a 1-D integer tensor, got ",
               index.Describe());
  Tensor i64 = index.To(DType::kI64);
  if (i64.numel() > 0) {
    int64_t lo = Min(i64).item<int64_t>(), hi = Max(i64).item<int64_t>();
    QUANTA_CHECK(lo >= 0 && hi < size, op, ": index ", lo < 0 ? lo : hi, " out of range for dim ", d,
                 " of size ", size, " (", indexed, ")");
  }
  Shape along(shape.size(), 1);
  along[d] = index.numel();
  return i64.View(along).Expand(shape);
}
}  // namespace

Tensor IndexSelect(const Tensor& x, int64_t dim, const Tensor& index) {
  CheckDefined("index_select", {&x, &index});
  int d = WrapDimOrNeg(dim, x.dim());
  QUANTA_CHECK(d >= 0, "index_select: dim ", dim, " out of range for ", x.Describe());
  Shape shape = x.shape();
  shape[d] = index.numel();
  return Gather(x, d, SpreadIndex("index_select", index, d, shape, x.size(d), x.Describe()));
}

Tensor IndexAdd(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& src) {
  int d = WrapDimOrNeg(dim, static_cast<int64_t>(shape.size()));
  QUANTA_CHECK(d >= 0 && src.dim() == static_cast<int>(shape.size()) && src.size(d) == index.numel(),
               "index_add: bad operands (shape ", ShapeToString(shape), ", dim ", dim, ", ", index.Describe(), ", ",
               src.Describe(), ")");
  return ScatterAdd(shape, d,
                    SpreadIndex("index_add", index, d, src.shape(), shape[d], "target " + ShapeToString(shape)), src);
}

Tensor Gather(const Tensor& x, int64_t dim, const Tensor& index) {
  CheckDefined("gather", {&x, &index});
  int d = WrapDimOrNeg(dim, x.dim());
  QUANTA_CHECK(d >= 0, "gather: dim ", dim, " out of range for ", x.Describe());
  QUANTA_CHECK(IsIntegral(index.dtype()) && index.dim() == x.dim(),
               "gather: index must be an integer tensor of the same rank (", x.Describe(), ", ",
               index.Describe(), ")");
  for (int i = 0; i < x.dim(); ++i) {
    QUANTA_CHECK(i == d || index.size(i) <= x.size(i), "gather: index ", index.Describe(),
                 " larger than ", x.Describe(), " in dim ", i);
  }
  OpAttrs attrs;
  attrs.dims = {d};
  Tensor in[2] = {x, index.To(DType::kI64)};
  Tensor out = Tensor::Empty(index.shape(), x.dtype(), x.device());
  Dispatch(Op::kGather, in, {&out, 1}, attrs);
  return out;
}

// ---- creation ---------------------------------------------------------------------

void FillInplace(Tensor& x, double value) {
  CheckDefined("fill", {&x});
  CheckInplace(Op::kFill, x);
  CheckNotQuantized("fill", x);
  OpAttrs attrs;
  attrs.scalar = value;
  Dispatch(Op::kFill, {}, {&x, 1}, attrs);
}

Tensor Full(const Shape& shape, double value, DType dtype, const Device& device) {
  Tensor t = Tensor::Empty(shape, dtype, device);
  FillInplace(t, value);
  return t;
}
Tensor Zeros(const Shape& shape, DType dtype, const Device& device) { return Full(shape, 0, dtype, device); }
Tensor Ones(const Shape& shape, DType dtype, const Device& device) { return Full(shape, 1, dtype, device); }
Tensor ZerosLike(const Tensor& x) { return Zeros(x.shape(), x.dtype(), x.device()); }
Tensor OnesLike(const Tensor& x) { return Ones(x.shape(), x.dtype(), x.device()); }
Tensor Scalar(double value, DType dtype, const Device& device) { return Full({}, value, dtype, device); }

Tensor Arange(double start, double end, double step, DType dtype, const Device& device) {
  QUANTA_CHECK(step != 0 && std::isfinite(start) && std::isfinite(end) && std::isfinite(step),
               "arange: bad range start=", start, " end=", end, " step=", step);
  QUANTA_CHECK((end - start) / step >= 0, "arange: step ", step, " moves away from end (start=",
               start, ", end=", end, ")");
  auto n = static_cast<int64_t>(std::ceil((end - start) / step));
  Tensor out = Tensor::Empty({n}, dtype, device);
  OpAttrs attrs;
  attrs.scalar = start;
  attrs.scalar2 = step;
  Dispatch(Op::kArange, {}, {&out, 1}, attrs);
  return out;
}

Tensor Eye(int64_t n, DType dtype, const Device& device) {
  QUANTA_CHECK(n >= 0, "eye: negative size ", n);
  Tensor out = Zeros({n, n}, dtype, device);
  Tensor diagonal = out.AsStrided({n}, {n + 1}, 0);
  FillInplace(diagonal, 1);
  return out;
}

// ---- random -----------------------------------------------------------------------

Tensor Uniform(const Shape& shape, double low, double high, Generator* gen, DType dtype,
               const Device& device) {
  QUANTA_CHECK(low <= high, "uniform: low ", low, " > high ", high);
  return RandomOp(Op::kUniform, shape, low, high, gen, dtype, device);
}

Tensor Normal(const Shape& shape, double mean, double std, Generator* gen, DType dtype,
              const Device& device) {
  QUANTA_CHECK(std >= 0, "normal: negative std ", std);
  return RandomOp(Op::kNormal, shape, mean, std, gen, dtype, device);
}

Tensor Bernoulli(const Shape& shape, double p, Generator* gen, DType dtype, const Device& device) {
  QUANTA_CHECK(p >= 0 && p <= 1, "bernoulli: probability ", p, " outside [0, 1]");
  return RandomOp(Op::kBernoulli, shape, p, 0, gen, dtype, device);
}

Generator& DefaultGenerator() {
  static Generator* gen = new Generator(0);
  return *gen;
}

void ManualSeed(uint64_t seed) { DefaultGenerator().ManualSeed(seed); }

}  // namespace quanta
