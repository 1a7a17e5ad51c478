// The op frontends: each checks its inputs (throwing quanta::Error that names the
// op, shapes and dtypes), works out the output shape and dtype, and dispatches to
// the tensor's backend. Composite ops are written here from the primitives in
// core/ops.def. No kernels here: those live in backends/.
//
//   Tensor y = Add(x, Tensor::Scalar(1.0f));   // NumPy broadcasting
//   Tensor p = Softmax(Matmul(q, k.Transpose(-2, -1)), -1);
//   Tensor s = Sum(x, {0, 2}, /*keepdim=*/true);
//   Tensor c = Conv2d(x, w, b, {.stride = {2, 2}, .padding = {1, 1}});
//   AddInplace(acc, y);   // acc += y
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/generator.h"
#include "core/tensor.h"

namespace quanta {

// ---- elementwise ------------------------------------------------------------
// Unary ops compute in the input's floating dtype (integers promote to f32 for
// exp/log/sqrt/rsqrt/sigmoid/tanh/gelu, as in PyTorch); gelu is the erf form.
#define QUANTA_DECLARE_UNARY(Name, str) \
  Tensor Name(const Tensor& x);         \
  Tensor& Name##Inplace(Tensor& x);
QUANTA_UNARY_OPS(QUANTA_DECLARE_UNARY)
#undef QUANTA_DECLARE_UNARY

// Binary ops broadcast and promote (PromoteTypes); div of integers gives f32.
#define QUANTA_DECLARE_BINARY(Name, str)          \
  Tensor Name(const Tensor& a, const Tensor& b);   \
  Tensor Name(const Tensor& a, double b);          \
  Tensor& Name##Inplace(Tensor& a, const Tensor& b);
QUANTA_BINARY_OPS(QUANTA_DECLARE_BINARY)
#undef QUANTA_DECLARE_BINARY

// Comparisons broadcast and give bool.
#define QUANTA_DECLARE_COMPARE(Name, str)       \
  Tensor Name(const Tensor& a, const Tensor& b); \
  Tensor Name(const Tensor& a, double b);
QUANTA_COMPARE_OPS(QUANTA_DECLARE_COMPARE)
#undef QUANTA_DECLARE_COMPARE

Tensor Clamp(const Tensor& x, std::optional<double> lo, std::optional<double> hi);
Tensor& ClampInplace(Tensor& x, std::optional<double> lo, std::optional<double> hi);
Tensor Where(const Tensor& cond, const Tensor& a, const Tensor& b);
Tensor Square(const Tensor& x);

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& x);
Tensor& operator+=(Tensor& a, const Tensor& b);
Tensor& operator-=(Tensor& a, const Tensor& b);
Tensor& operator*=(Tensor& a, const Tensor& b);
Tensor& operator/=(Tensor& a, const Tensor& b);

// ---- casts ---------------------------------------------------------------------
Tensor Cast(const Tensor& x, DType dtype);  // same as x.To(dtype)

// ---- reductions ---------------------------------------------------------------
// `dims` empty means every dim. Sums accumulate in f64 (floating) or i64.
Tensor Sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor Mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor Max(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor Min(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
// Index (i64) of the first maximum along dim.
Tensor Argmax(const Tensor& x, int64_t dim, bool keepdim = false);
// Variance with Bessel's correction by default (correction = 1), as torch.var.
Tensor Var(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false,
           int64_t correction = 1);
// exp(x - max) / sum(exp(x - max)) along dim: one kernel (Op::kSoftmax) where
// the backend has it, else that composition; the same values to a few ulps.
Tensor Softmax(const Tensor& x, int64_t dim);
Tensor LogSoftmax(const Tensor& x, int64_t dim);

// ---- linear algebra and convolution -----------------------------------------
// torch.matmul semantics: 1-D operands are promoted and squeezed back, batch dims
// broadcast. f32/bf16/f16 go through oneDNN on the CPU.
Tensor Matmul(const Tensor& a, const Tensor& b);

struct Conv2dOptions {
  int64_t stride[2] = {1, 1};
  int64_t padding[2] = {0, 0};
  int64_t dilation[2] = {1, 1};
  int64_t groups = 1;
};
// input (N, C, H, W), weight (O, C / groups, KH, KW), bias (O) or undefined.
Tensor Conv2d(const Tensor& input, const Tensor& weight, const Tensor& bias = Tensor(),
              const Conv2dOptions& options = {});

// The conv2d geometry a recorded conv2d op carries in its OpAttrs.
Conv2dOptions Conv2dOptionsOf(const OpAttrs& attrs);

// The two halves of conv2d's gradient (autograd's conv2d backward uses them).
Tensor Conv2dBackwardInput(const Tensor& grad_out, const Tensor& weight, const Shape& input_shape,
                           const Conv2dOptions& options);
Tensor Conv2dBackwardWeight(const Tensor& grad_out, const Tensor& input, const Shape& weight_shape,
                            const Conv2dOptions& options);

// ---- pooling ------------------------------------------------------------------------
struct Pool2dOptions {
  int64_t kernel[2] = {2, 2};
  int64_t stride[2] = {0, 0};  // 0: the kernel size
  int64_t padding[2] = {0, 0};
  int64_t dilation[2] = {1, 1};
};
// x (N, C, H, W), floating or per-tensor quantized (the output keeps x's
// parameters: max commutes with quantization). Padding counts as -inf. The argmax
// indices are kept in the graph; when nothing will take the gradient (grad mode
// off or x not requiring it) they are not computed.
Tensor MaxPool2d(const Tensor& x, const Pool2dOptions& options);
// Routes grad_out to the argmax positions (indices: flat h * W + w per plane).
Tensor MaxPool2dBackward(const Tensor& grad_out, const Tensor& indices, const Shape& input_shape);

// ---- batch normalization (training) -------------------------------------------
// Fused: per channel c of x (N, C, H, W), the batch's mean and biased variance
// over N, H, W, then y = (x - mean) / sqrt(var + eps) * weight + bias, in one
// kernel (two passes over x for the statistics, one for y). weight and bias:
// (C) of x's dtype. Returns {y, mean, var}; mean and var are f32 (f64 for an f64
// x). Gradients reach x, weight and bias (and through mean and var).
// nn::BatchNorm2d calls it (nn/functional.h) where the backend has the kernel.
// With an epilogue (Note [Batch norm epilogue] in backends/cpu/reference_normalization.cc)
// y = relu(bn(x) + residual) in the same pass: residual (like x) is added where
// defined, ReLU applied where relu is set, rounded exactly as the composition
// Relu(Add(bn(x), residual)) rounds, so the two are equal bit for bit.
std::array<Tensor, 3> BatchNormTraining(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps,
                                        const Tensor& residual = Tensor(), bool relu = false);
// Its gradients in one pass over grad_y and x: {grad x, grad weight, grad bias},
// for y's gradient only (the statistics' own gradients are added by the rule).
std::array<Tensor, 3> BatchNormBackward(const Tensor& grad_y, const Tensor& x, const Tensor& weight,
                                        const Tensor& mean, const Tensor& var, double eps);
// The gradients of the epilogue form with relu: grad_y is relu's output's
// gradient; the ReLU mask is recomputed from x, bias and residual (no saved
// output). {grad x, grad weight, grad bias, grad residual (undefined without one)}:
// equal to ThresholdBackward then BatchNormBackward, bit for bit.
std::array<Tensor, 4> BatchNormReluBackward(const Tensor& grad_y, const Tensor& x, const Tensor& weight,
                                            const Tensor& bias, const Tensor& mean, const Tensor& var, double eps,
                                            const Tensor& residual = Tensor());

// ---- layer normalization ----------------------------------------------------------
// Over x's last k = weight.dim() dims, as torch.native_layer_norm: per row of
// D = weight.numel() values, y = (x - mean) / sqrt(var + eps) * weight + bias
// with the biased variance, in one kernel (Note [Fused layer norm] in
// backends/cpu/reference_normalization.cc). weight and bias: x's trailing shape
// and dtype. Returns {y, mean, rstd}: mean and rstd = 1 / sqrt(var + eps) have
// x's shape with the last k dims 1, f32 (f64 for an f64 x). Gradients reach x,
// weight and bias (and through mean and rstd). nn's LayerNorm calls it
// (nn/functional.h) where the backend has the kernel.
std::array<Tensor, 3> NativeLayerNorm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps);

// ---- quantization (Note [One quantization formula] in core/scalar_ops.h) -------
// The integer range of a quantized dtype under params (params' own range if set).
std::pair<int64_t, int64_t> QuantRange(DType dtype, const QuantParams& params);
// Float x to quantized dtype (qint8, quint8, qint4) with params: per tensor or
// per channel, any range inside the dtype's (bit widths 2..8), ties to even.
Tensor Quantize(const Tensor& x, DType dtype, const QuantParams& params);
// scale * (q - zero_point) as a floating tensor.
Tensor Dequantize(const Tensor& q, DType dtype = DType::kF32);
// q under new parameters (and dtype): Quantize(Dequantize(q)) in one place.
Tensor Requantize(const Tensor& q, DType dtype, const QuantParams& params);

// How fake quantization passes gradients to its input: the straight-through
// estimator with the clipping mask, or element-wise gradient scaling (EWGS, Lee
// et al. 2021): g * (1 + delta * sign(g) * (x / scale - round(x / scale))).
enum class FakeQuantGradient { kSte = 0, kEwgs = 1 };
struct FakeQuantOptions {
  int64_t quant_min = -128, quant_max = 127;
  int64_t axis = -1;                 // per channel along axis, or -1: per tensor
  FakeQuantGradient gradient = FakeQuantGradient::kSte;
  double ewgs_delta = 0;
  double lsq_grad_scale = 1;         // LSQ: 1 / sqrt(N * quant_max) on the scale's gradient
};
// y = scale * (clamp(round(x / scale) + zero_point, min, max) - zero_point), the
// same formula as Quantize then Dequantize. scale and zero_point are floating
// tensors of 1 or x.size(axis) values and receive LSQ's gradients: for scale,
// round(x/s) - x/s inside the range and (min or max) - zero_point outside; for
// zero_point (LSQ+'s offset, in steps), -scale outside and 0 inside.
Tensor FakeQuantize(const Tensor& x, const Tensor& scale, const Tensor& zero_point, const FakeQuantOptions& options);
// fake_quantize's gradients in one pass (autograd's rule calls it): for the
// upstream grad and x, scale, zero_point already spread to x's shape, returns
// per-element gradients of x, scale (times lsq_grad_scale) and zero point.
// Gradients `needed` leaves out are returned undefined and never written: an
// observer's scale (EMA, min/max) takes none, a symmetric quantizer's zero
// point none, and each would otherwise cost a pass that writes x's size.
std::array<Tensor, 3> FakeQuantizeBackward(const Tensor& grad, const Tensor& x, const Tensor& scale,
                                           const Tensor& zero_point, const OpAttrs& attrs,
                                           std::array<bool, 3> needed = {true, true, true});
// The same for scale and zero point given as one value per channel, (C) along
// attrs.dims[0], or (1) per tensor (attrs.dims empty or {-1}), with their
// gradients summed to that shape, as autograd's rule for fake_quantize returns
// them (Note [Fake-quant parameter sums]). On the CPU the kernel sums them in its
// pass over dense x and grad laid out alike, writing no x-sized gradient for
// them; otherwise they are written and summed.
std::array<Tensor, 3> FakeQuantizeBackwardSummed(const Tensor& grad, const Tensor& x, const Tensor& scale,
                                                 const Tensor& zero_point, const OpAttrs& attrs,
                                                 std::array<bool, 3> needed);

// ---- block-scaled minifloats (Note [Block scaling] in core/minifloat.h) ----------
// A format: minifloat elements in blocks of rows x cols over the last two dims
// (1 x B tiles along the last dim, or B x B blocks), one scale per block.
//
//   BlockQuantized q = BlockQuantize(x, BlockFormat::Mx(DType::kF4E2M1));  // MXFP4
//   Tensor y = BlockDequantize(q);             // f32, x's shape
//   Tensor z = BlockFakeQuantize(w, BlockFormat::Block());  // DeepSeek-V3 weights
struct BlockFormat {
  DType element = DType::kF8E4M3;  // f8_e4m3, f8_e5m2, f6_e2m3, f6_e3m2, f4_e2m1
  int64_t rows = 1, cols = 32;     // one block
  DType scale = DType::kF8E8M0;    // f32, f8_e8m0 (OCP MX) or f8_e4m3 (NVFP4: with a per-tensor f32 scale)
  // OCP MX v1.0: 32 elements, E8M0 scale (MXFP8 with f8_e4m3, MXFP6, MXFP4).
  static BlockFormat Mx(DType element) { return {element, 1, 32, DType::kF8E8M0}; }
  // NVFP4: 16 FP4 elements, an E4M3 scale, and a per-tensor f32 scale.
  static BlockFormat Nvfp4() { return {DType::kF4E2M1, 1, 16, DType::kF8E4M3}; }
  // DeepSeek-V3: E4M3 in 1 x 128 tiles (activations) or 128 x 128 blocks (weights), f32 scales.
  static BlockFormat Tile(int64_t size = 128, DType element = DType::kF8E4M3) { return {element, 1, size, DType::kF32}; }
  static BlockFormat Block(int64_t size = 128, DType element = DType::kF8E4M3) {
    return {element, size, size, DType::kF32};
  }
  // Storage per element, scales included (MXFP4: 4 + 8 / 32 = 4.25).
  double BitsPerElement() const;
  std::string ToString() const;  // "f4_e2m1 1x32 f8_e8m0"
  bool operator==(const BlockFormat&) const = default;
};
struct BlockQuantized {
  Tensor codes;         // the element dtype, x's shape
  Tensor scales;        // the scale dtype; x's shape with the last two dims divided by the block's
  Tensor tensor_scale;  // f32 scalar: NVFP4's per-tensor scale, 1 for the other formats
  BlockFormat format;
};
// Each block's scale from its own largest magnitude, computed as it goes (online,
// as DeepSeek-V3 and the MX spec do); x floating, its last dims multiples of the
// block's.
BlockQuantized BlockQuantize(const Tensor& x, const BlockFormat& format);
// codes * scale (* the tensor scale) as a floating tensor.
Tensor BlockDequantize(const BlockQuantized& q, DType dtype = DType::kF32);
// BlockDequantize(BlockQuantize(x)) in x's dtype; the gradient passes straight
// through (nothing saturates that a block's own scale did not put in range).
Tensor BlockFakeQuantize(const Tensor& x, const BlockFormat& format);

// qint4 values (two a byte) as qint8 with the same parameters, and back: exact.
Tensor UnpackQInt4(const Tensor& q);
Tensor PackQInt4(const Tensor& q);

// What an integer layer fuses after its accumulation and bias, before the output
// is rounded and stored (no extra pass): real += residual (the output's shape: a
// skip connection; f32, or per-tensor quint8/qint8 read as its real values), then
// real = max(real, 0).
struct IntegerPostOps {
  Tensor residual;
  bool relu = false;
  bool gelu = false;  // exact GELU of the real result (BERT's intermediate layer); not with a residual or ReLU
  // A hint, not math: the input's scale changes from call to call (dynamic
  // quantization), so a backend must not build a kernel per scale (Note
  // [Run-time output scales] in backends/cpu/onednn.cc).
  bool varying_input_scale = false;
};

// Integer matmul for converted models: a (M, K) quint8/qint8 per tensor, b (K, N)
// qint8 or qint4 (two a byte; the kernel unpacks it) per tensor or per channel
// along dim 1; bias f32 (N) or undefined.
// acc = sum_k (a - za)(b - zb) in i32; real = sa * sb[n] * acc + bias[n], then
// the post-ops; the result is real in f32, or Quantize(real, out_dtype, *out_params).
Tensor QuantizedMatmul(const Tensor& a, const Tensor& b, const Tensor& bias = Tensor(), DType out_dtype = DType::kF32,
                       const QuantParams* out_params = nullptr, const IntegerPostOps& post = {});

// Integer convolution: x (N, C, H, W) quint8/qint8 per tensor, w (O, C/G, KH, KW)
// qint8/qint4 per tensor or per output channel (axis 0) with zero points 0, bias
// f32 (O) or undefined; padding holds x's zero point (a real 0). Output as
// QuantizedMatmul: f32, or requantized with per-tensor out_params. A channels-last
// x (Tensor::ChannelsLast) gives a channels-last output, with no layout change.
Tensor QuantizedConv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dOptions& options,
                       DType out_dtype = DType::kF32, const QuantParams* out_params = nullptr,
                       const IntegerPostOps& post = {});

// ---- joining and indexing -----------------------------------------------------
Tensor Concat(const std::vector<Tensor>& tensors, int64_t dim);
Tensor Stack(const std::vector<Tensor>& tensors, int64_t dim);
// index: 1-D integer. out.size(dim) == index.numel(). A gather with the index
// spread over the other dims (stride 0).
Tensor IndexSelect(const Tensor& x, int64_t dim, const Tensor& index);
// torch.gather: out has index's shape; out[i][j] = x[i][index[i][j]] for dim 1.
Tensor Gather(const Tensor& x, int64_t dim, const Tensor& index);
// Adjoints of IndexSelect and Gather: zeros(shape) with src added at index
// (torch.index_add / torch.scatter_add). IndexAdd is ScatterAdd with a spread index.
Tensor IndexAdd(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& src);
Tensor ScatterAdd(const Shape& shape, int64_t dim, const Tensor& index, const Tensor& src);

// ---- creation -------------------------------------------------------------------
Tensor Full(const Shape& shape, double value, DType dtype = DType::kF32,
            const Device& device = Device::Cpu());
Tensor Zeros(const Shape& shape, DType dtype = DType::kF32, const Device& device = Device::Cpu());
Tensor Ones(const Shape& shape, DType dtype = DType::kF32, const Device& device = Device::Cpu());
Tensor ZerosLike(const Tensor& x);
Tensor OnesLike(const Tensor& x);
Tensor Scalar(double value, DType dtype = DType::kF32, const Device& device = Device::Cpu());
// [start, end) in steps of step; numel = ceil((end - start) / step).
Tensor Arange(double start, double end, double step = 1, DType dtype = DType::kF32,
              const Device& device = Device::Cpu());
Tensor Eye(int64_t n, DType dtype = DType::kF32, const Device& device = Device::Cpu());
void FillInplace(Tensor& x, double value);

// ---- random (Philox counter-based: same numbers on every backend) -------------
Tensor Uniform(const Shape& shape, double low = 0, double high = 1, Generator* gen = nullptr,
               DType dtype = DType::kF32, const Device& device = Device::Cpu());
Tensor Normal(const Shape& shape, double mean = 0, double std = 1, Generator* gen = nullptr,
              DType dtype = DType::kF32, const Device& device = Device::Cpu());
// Each element is 1 with probability p, else 0.
Tensor Bernoulli(const Shape& shape, double p, Generator* gen = nullptr,
                 DType dtype = DType::kF32, const Device& device = Device::Cpu());

// ---- low level -------------------------------------------------------------------
// Runs op's kernel on the device of the inputs (or of outputs[0] when there are
// none). Checks that every tensor is on that device. For frontends and tests.
void Dispatch(Op op, std::span<const Tensor> inputs, std::span<Tensor> outputs,
              const OpAttrs& attrs = {});

}  // namespace quanta
