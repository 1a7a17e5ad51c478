// Launchers for the CUDA kernels, callable from plain C++ (no CUDA headers): the
// boundary between cuda_backend.cc (tensors, checks, vendor libraries) and the
// .cu files (device loops). Each kernel is written once as a template over
// storage types and reaches every dtype through VisitDType; the per-element math
// comes from core/scalar_ops.h, shared with the CPU backend. Not here: cuBLAS,
// cuBLASLt and cuDNN calls (cuda_backend.cc).
//
//   Geometry g = ...;  Operand y = ..., x = ...;        // from tensors
//   std::string err = LaunchUnary(Op::kExp, g, y, x, stream);
//   QUANTA_CHECK(err.empty(), "exp: ", err);
#pragma once

#include <cstdint>
#include <string>

#include "core/backend.h"
#include "core/dtype.h"
#include "core/minifloat.h"

namespace quanta::cuda {

inline constexpr int kMaxRank = 8;

// The logical shape an elementwise kernel walks (row-major linear index).
struct Geometry {
  int rank = 0;
  int64_t numel = 0;
  int64_t sizes[kMaxRank] = {};
};
// One operand over a Geometry: storage base, dtype, offset and strides in
// elements; `contiguous` when element i sits at offset + i.
struct Operand {
  void* base = nullptr;
  DType dtype = DType::kF32;
  int64_t offset = 0;
  int64_t strides[kMaxRank] = {};
  bool contiguous = false;
};
using Stream = void*;  // a cudaStream_t

// Each returns "" on success or the CUDA error string. Outputs first.
std::string LaunchUnary(Op op, const Geometry& g, const Operand& y, const Operand& x, Stream s);
// Binary and comparison ops (a comparison's y is bool).
std::string LaunchBinary(Op op, const Geometry& g, const Operand& y, const Operand& a, const Operand& b, Stream s);
std::string LaunchWhere(const Geometry& g, const Operand& y, const Operand& cond, const Operand& a, const Operand& b,
                        Stream s);
// Strided copy with cast (quantized dtypes copy their integers; a qint4 y must
// be contiguous with an even offset: each thread writes one byte).
std::string LaunchCopy(const Geometry& g, const Operand& y, const Operand& x, Stream s);
std::string LaunchFill(const Geometry& g, const Operand& y, double value, Stream s);
std::string LaunchArange(int64_t n, const Operand& y, int64_t stride, double start, double step, Stream s);
// uniform(a, b), normal(a = mean, b = std), bernoulli(a = p): element i of the
// contiguous y uses Philox counter offset + i, as on the CPU.
std::string LaunchRandom(Op op, int64_t n, const Operand& y, uint64_t seed, uint64_t offset, double a, double b,
                         Stream s);
// sum/max/min/argmax: y over `out` (reduced dims kept at 1); x_outer is x over
// `out`, x_inner the reduced dims (offsets relative to x_outer's element).
std::string LaunchReduce(Op op, const Geometry& out, const Operand& y, const Operand& x_outer, const Geometry& inner,
                         const Operand& x_inner, Stream s);

// Note [One quantization formula] on the device; scale and zero point are f64
// operands for quantize/dequantize and x's dtype for fake quantization.
std::string LaunchQuantize(const Geometry& g, const Operand& q, const Operand& x, const Operand& scale,
                           const Operand& zero_point, double qmin, double qmax, Stream s);
std::string LaunchDequantize(const Geometry& g, const Operand& x, const Operand& q, const Operand& scale,
                             const Operand& zero_point, Stream s);
std::string LaunchFakeQuantize(const Geometry& g, const Operand& y, const Operand& x, const Operand& scale,
                               const Operand& zero_point, double qmin, double qmax, Stream s);
std::string LaunchFakeQuantizeBackward(const Geometry& g, const Operand& grad_x, const Operand& grad_scale,
                                       const Operand& grad_zero_point, const Operand& grad, const Operand& x,
                                       const Operand& scale, const Operand& zero_point, double qmin, double qmax,
                                       bool ewgs, double ewgs_delta, double lsq_grad_scale, Stream s);

// Block-scaled minifloats (Note [Block scaling] in core/minifloat.h), one thread
// per block: a block is rows x cols of the last two dims (matrix_rows x
// matrix_cols) of a contiguous x; blocks are numbered row-major over the
// matrices. element / scale_format (null: f32 scales) are the host's tables;
// tensor_scale points to the f32 scalar on the device. Codes are stored at the
// element's width (FP4 two a byte, FP6 four per three bytes); when a block's
// codes do not end on a byte the launch runs its blocks in one thread.
struct BlockShape {
  int64_t rows = 1, cols = 1, matrix_rows = 1, matrix_cols = 1, n_blocks = 0;
};
std::string LaunchBlockQuantize(const BlockShape& b, DType x_dtype, const void* x, const MiniFloatFormat& element,
                                const MiniFloatFormat* scale_format, const float* tensor_scale, void* codes,
                                void* scales, Stream s);
std::string LaunchBlockDequantize(const BlockShape& b, DType y_dtype, void* y, const MiniFloatFormat& element,
                                  const MiniFloatFormat* scale_format, const float* tensor_scale, const void* codes,
                                  const void* scales, Stream s);

// gather: y = x[..index..] along a dim of size dim_size and stride dim_stride;
// x_base is x with that dim's stride 0, over y's geometry. scatter_add is its
// adjoint over src's geometry. A bad index is written to *bad_index (device
// memory, left alone when all are in range).
std::string LaunchGather(const Geometry& g, const Operand& y, const Operand& x_base, const Operand& index,
                         int64_t dim_stride, int64_t dim_size, int64_t* bad_index, Stream s);
std::string LaunchScatterAdd(const Geometry& g, const Operand& y_base, const Operand& src, const Operand& index,
                             int64_t dim_stride, int64_t dim_size, int64_t* bad_index, Stream s);

struct PoolGeometry {
  int64_t N, C, H, W, OH, OW;
  int64_t kernel[2], stride[2], padding[2], dilation[2];
  int64_t x_strides[4], y_strides[4];  // (N, C, H, W) strides: contiguous or channels-last
};
// x -> y and i64 argmax (ih * W + iw), strided as PoolGeometry says.
// indices: null when the caller needs no argmax (inference).
std::string LaunchMaxPool2d(const PoolGeometry& p, DType dtype, const void* x, void* y, int64_t* indices, Stream s);
// grad_out, indices (planes, OHW) contiguous -> grad_in (planes, HW) contiguous.
std::string LaunchMaxPool2dBackward(DType dtype, int64_t planes, int64_t ohw, int64_t hw, const void* grad_out,
                                    const int64_t* indices, void* grad_in, Stream s);

// Batch norm in training (Note [Fused batch norm] in
// backends/cpu/reference_normalization.cc), one block per channel; x, y, grad_y,
// grad_x (N, C, HW) contiguous, the rest (C). mean and var are f64 for f64 data,
// else f32. Forward: y, the batch mean and the biased variance. Backward:
// grad_x, grad_weight, grad_bias from grad_y. The epilogue (Note [Batch norm
// epilogue]): residual (like x) added where non-null, ReLU where relu is set;
// the backward takes bias (non-null with relu: the mask is recomputed) and
// writes grad_residual where the residual is non-null.
struct BatchNormEpilogue {
  const void* residual = nullptr;
  bool relu = false;
};
std::string LaunchBatchNorm(DType dtype, int64_t N, int64_t C, int64_t HW, double eps, const void* x, const void* weight,
                            const void* bias, void* y, void* mean, void* var, BatchNormEpilogue epilogue, Stream s);
std::string LaunchBatchNormBackward(DType dtype, int64_t N, int64_t C, int64_t HW, double eps, const void* grad_y,
                                    const void* x, const void* weight, const void* mean, const void* var,
                                    void* grad_x, void* grad_weight, void* grad_bias, const void* bias,
                                    BatchNormEpilogue epilogue, void* grad_residual, Stream s);

// Layer norm over rows of D values (x, y contiguous; weight and bias D values;
// mean and rstd one per row, f64 for f64, else f32) and softmax along the
// middle dim of x viewed as (outer, n, inner): Note [Fused layer norm].
std::string LaunchLayerNorm(DType dtype, int64_t rows, int64_t D, double eps, const void* x, const void* weight,
                            const void* bias, void* y, void* mean, void* rstd, Stream s);
std::string LaunchSoftmax(DType dtype, int64_t outer, int64_t n, int64_t inner, const void* x, void* y, Stream s);

// Plain loops for what cuBLAS does not cover (integer dtypes): y (batch, M, N)
// contiguous; a and b addressed by (batch stride, row stride, column stride).
struct MatrixOperand {
  const void* base;
  int64_t offset, batch_stride, row_stride, col_stride;
};
std::string LaunchMatmulLoops(DType dtype, int64_t batch, int64_t M, int64_t N, int64_t K, const MatrixOperand& a,
                              const MatrixOperand& b, void* y, Stream s);

// ---- convolution by implicit GEMM (the cuBLAS path) and the integer kernels ----

struct ConvGeometry {
  int64_t N, C, H, W, O, CG, KH, KW, OH, OW, G;
  int64_t stride[2], padding[2], dilation[2];
  int64_t x_strides[4];  // (N, C, H, W) strides of x
};
// Float im2col of images [n0, n0 + count), group g: col (count, CG*KH*KW, OH*OW)
// contiguous, zero padding. col2im is its adjoint: grad_x (count images of
// (C, H, W), group g's channels) gets the sum over taps (gather form, no atomics).
std::string LaunchIm2col(const ConvGeometry& c, DType dtype, const void* x, int64_t n0, int64_t count, int64_t g,
                         void* col, Stream s);
std::string LaunchCol2im(const ConvGeometry& c, DType dtype, const void* col, int64_t n0, int64_t count, int64_t g,
                         void* grad_x, Stream s);

// Integer GEMM operands are int8, K-contiguous and padded: rows to a multiple of
// 4, K to a multiple of 16 (cuBLASLt's IMMA alignment). Unsigned values are
// shifted by -128 (their zero point with them), so every product is s8 x s8.
QUANTA_HOST_DEVICE inline int64_t PadTo(int64_t v, int64_t m) { return (v + m - 1) / m * m; }
// a (M, K) quint8/qint8 contiguous -> packed (PadTo(M, 4), PadTo(K, 16)).
std::string LaunchPackRows(DType dtype, const void* a, int64_t M, int64_t K, int8_t* packed, Stream s);
// b (K, N) qint8 or qint4 (elements b_offset...) -> packed (PadTo(N, 4), PadTo(K, 16)), transposed.
std::string LaunchPackColumns(DType dtype, const void* b, int64_t b_offset, int64_t K, int64_t N, int8_t* packed,
                              Stream s);
// Integer im2col: images [n0, n0+count), group g -> packed rows (count*OH*OW, CG*KH*KW),
// padded taps holding x's zero point (they add nothing).
std::string LaunchIm2colInt8(const ConvGeometry& c, DType dtype, const void* x, int64_t x_zero_point, int64_t n0,
                             int64_t count, int64_t g, int8_t* packed, Stream s);
// Weights (O, CG, KH, KW) qint8/qint4 (element offset w_offset), group g -> packed (PadTo(OG, 4), PadTo(CG*KH*KW, 16)).
std::string LaunchPackConvWeights(const ConvGeometry& c, DType dtype, const void* w, int64_t w_offset, int64_t g,
                                  int8_t* packed, Stream s);
// Row sums of a packed matrix (rows, Kp) -> sums (rows), i32.
std::string LaunchRowSums(const int8_t* packed, int64_t rows, int64_t Kp, int32_t* sums, Stream s);
// acc (M, N) = a (M, K) b^T, both packed (ldk = PadTo(K, 16)); acc leading dim ldc.
// The fallback when cuBLASLt refuses a shape.
std::string LaunchInt8GemmLoops(const int8_t* a, const int8_t* bt, int64_t M, int64_t N, int64_t ldk, int32_t* acc,
                                int64_t ldc, Stream s);

// The integer epilogue (Note [Integer epilogue on the device] in cuda_backend.cc):
// acc row m = (image, pixel), column n = output channel. real = sa * sb[n] *
// (acc - za*colsum[n] - zb[n]*rowsum[m] + K*za*zb[n]) + bias[n] (+ residual,
// ReLU), stored as f32 or requantized to y's per-tensor parameters.
struct Epilogue {
  const int32_t* acc;
  int64_t ldc;
  int64_t rows, cols, K;       // rows = count*pixels, cols = output channels of this group
  int64_t pixels, first_image, first_channel;
  const int32_t *rowsum, *colsum;
  double sa, za;               // activation scale and (shifted) zero point
  const double *sb, *zb;       // per output channel (indexed by the global channel)
  const float* bias;           // per output channel, or null
  // y and residual as (image, channel, pixel) with pixel = oh * OW + ow.
  void* y;
  DType y_dtype;
  int64_t y_strides[3];
  int64_t OW, y_pixel_strides[2];  // (oh, ow) strides
  double so, zo, qmin, qmax;   // y's parameters when quantized
  const void* residual;        // or null
  DType residual_dtype;
  int64_t residual_strides[3], residual_pixel_strides[2];
  double sr, zr;               // the residual's parameters when quantized
  bool relu, gelu;
};
std::string LaunchEpilogue(const Epilogue& e, Stream s);

}  // namespace quanta::cuda
