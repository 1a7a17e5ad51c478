// The CUDA backend: a caching allocator, one compute stream per device, copies
// (large host->device ones staged through pinned memory on a copy stream), and a
// kernel for every op of core's table: elementwise/reduction/quantization loops
// (kernels.cu, nn_kernels.cu), GEMM through cuBLAS (f32, TF32 by option, f16,
// bf16, f64), convolution through cuDNN or implicit GEMM over cuBLAS (option
// "conv"), integer GEMM/convolution through cuBLASLt int8 tensor cores.
// Not here: autograd, nn, quant — they reach this file only through core's ops.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "backends/cuda/kernels.h"
#include "core/backend.h"
#include "core/block_cache.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/tensor.h"

// Note [One checker]: every CUDA, cuBLAS, cuBLASLt and cuDNN call goes through
// one of these; failures name the call, the library's message, file and line.
#define QUANTA_CUDA_CHECK(expr)                                                                   \
  do {                                                                                            \
    cudaError_t quanta_err = (expr);                                                              \
    QUANTA_CHECK(quanta_err == cudaSuccess, "cuda: ", #expr, " failed: ", cudaGetErrorString(quanta_err), \
                 " at ", __FILE__, ":", __LINE__);                                                \
  } while (0)
#define QUANTA_CUBLAS_CHECK(expr)                                                                  \
  do {                                                                                             \
    cublasStatus_t quanta_st = (expr);                                                             \
    QUANTA_CHECK(quanta_st == CUBLAS_STATUS_SUCCESS, "cublas: ", #expr, " failed: ",               \
                 cublasGetStatusString(quanta_st), " at ", __FILE__, ":", __LINE__);               \
  } while (0)
#define QUANTA_CUDNN_CHECK(expr)                                                                   \
  do {                                                                                             \
    cudnnStatus_t quanta_st = (expr);                                                              \
    QUANTA_CHECK(quanta_st == CUDNN_STATUS_SUCCESS, "cudnn: ", #expr, " failed: ",                 \
                 cudnnGetErrorString(quanta_st), " at ", __FILE__, ":", __LINE__);                 \
  } while (0)
#define QUANTA_LAUNCH_CHECK(c, expr)                                                               \
  do {                                                                                             \
    std::string quanta_err = (expr);                                                               \
    QUANTA_CHECK(quanta_err.empty(), OpName((c).op), ": CUDA kernel failed: ", quanta_err, " (",   \
                 DescribeInputs(c), ") at ", __FILE__, ":", __LINE__);                             \
  } while (0)

#pragma GCC diagnostic ignored "-Wdeprecated-declarations"  // cuDNN's legacy convolution API

namespace quanta::cuda {
namespace {

std::string DescribeInputs(const KernelCall& c) {
  std::string s;
  for (const Tensor& t : c.in) absl::StrAppend(&s, s.empty() ? "" : ", ", t.Describe());
  return s;
}

// ---- per-device state ---------------------------------------------------------------

// Note [One compute stream]: every kernel and library call of a device runs on
// its one compute stream, in the order the host issues them. That order is what
// makes the caching allocator safe (a freed block's next user is queued after
// its last one) and what lets ops return without synchronizing. Host reads
// (CopyToHost) synchronize; large host->device copies run on a per-thread copy
// stream that first waits for the compute stream (Note [Copy stream]).
struct DeviceState {
  int index = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  cublasLtHandle_t blas_lt = nullptr;
  cudnnHandle_t dnn = nullptr;
  std::unique_ptr<BlockCache> allocator;  // Note [Device block cache]
  std::mutex algo_mu;
  std::map<std::string, int> algorithms;  // cuDNN algorithm per convolution problem
};

struct Options {
  bool tf32 = false;        // f32 GEMM/convolution on TF32 tensor cores
  bool conv_cudnn = true;   // else implicit GEMM over cuBLAS
};
Options& GlobalOptions() {
  static Options options;
  return options;
}

// Note [Device block cache]: device memory comes from a core BlockCache over
// cudaMalloc, so a training step allocates nothing from the driver once warm.
// Every size is cached (512-byte classes below 1 MiB, 1 MiB classes above). A
// freed block may be handed out while kernels queued earlier still use it,
// which the stream order makes safe (Note [One compute stream]); before cached
// blocks go back to cudaFree the device is synchronized.
size_t DeviceSizeClass(size_t bytes) {
  constexpr size_t kSmall = 512, kLarge = size_t{1} << 20;
  if (bytes < kLarge) return (std::max<size_t>(bytes, 1) + kSmall - 1) / kSmall * kSmall;
  return (bytes + kLarge - 1) / kLarge * kLarge;
}

std::unique_ptr<BlockCache> MakeDeviceCache(int device) {
  BlockCache::Source source{
      .allocate =
          [device](size_t bytes) -> void* {
            QUANTA_CUDA_CHECK(cudaSetDevice(device));
            void* p = nullptr;
            cudaError_t e = cudaMalloc(&p, bytes);
            if (e == cudaErrorMemoryAllocation) {
              cudaGetLastError();  // clear it: the cache frees its blocks and asks again
              return nullptr;
            }
            QUANTA_CHECK(e == cudaSuccess, "cuda:", device, ": allocating ", bytes, " bytes failed: ",
                         cudaGetErrorString(e));
            return p;
          },
      .release = [](void* p) { cudaFree(p); },
      .before_release =
          [device] {
            cudaSetDevice(device);
            cudaDeviceSynchronize();  // queued kernels may still use cached blocks
          },
      .name = "cuda:" + std::to_string(device)};
  return std::make_unique<BlockCache>(std::move(source), &DeviceSizeClass);
}

DeviceState& State(int device) {
  static std::mutex mu;
  static std::array<std::unique_ptr<DeviceState>, 16> states;
  QUANTA_CHECK(device >= 0 && device < 16, "cuda: device index ", device, " out of range");
  std::lock_guard<std::mutex> lock(mu);
  auto& s = states[device];
  if (!s) {
    s = std::make_unique<DeviceState>();
    s->index = device;
    QUANTA_CUDA_CHECK(cudaSetDevice(device));
    QUANTA_CUDA_CHECK(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking));
    s->allocator = MakeDeviceCache(device);
  }
  return *s;
}

DeviceState& StateOf(const KernelCall& c) {
  // An output may be left undefined (fake_quantize_backward's gradients not asked for).
  const Tensor& t = c.out.empty() || !c.out[0].defined() ? c.in[0] : c.out[0];
  DeviceState& s = State(t.device().index);
  cudaSetDevice(s.index);
  return s;
}

cublasHandle_t Blas(DeviceState& s) {
  if (s.blas == nullptr) {
    QUANTA_CUBLAS_CHECK(cublasCreate(&s.blas));
    QUANTA_CUBLAS_CHECK(cublasSetStream(s.blas, s.stream));
    QUANTA_CUBLAS_CHECK(cublasSetMathMode(s.blas, CUBLAS_DEFAULT_MATH));
  }
  return s.blas;
}
cublasLtHandle_t BlasLt(DeviceState& s) {
  if (s.blas_lt == nullptr) QUANTA_CUBLAS_CHECK(cublasLtCreate(&s.blas_lt));
  return s.blas_lt;
}
cudnnHandle_t Dnn(DeviceState& s) {
  if (s.dnn == nullptr) {
    QUANTA_CUDNN_CHECK(cudnnCreate(&s.dnn));
    QUANTA_CUDNN_CHECK(cudnnSetStream(s.dnn, s.stream));
  }
  return s.dnn;
}

// Device scratch memory from the caching allocator, returned on destruction
// (safe under Note [One compute stream]).
class Scratch {
 public:
  Scratch(DeviceState& s, size_t bytes) : s_(s), bytes_(std::max<size_t>(bytes, 1)) { p_ = s.allocator->Allocate(bytes_); }
  ~Scratch() { s_.allocator->Free(p_, bytes_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <typename T = void>
  T* get() const { return static_cast<T*>(p_); }

 private:
  DeviceState& s_;
  size_t bytes_;
  void* p_;
};

// Uploads a small host array into scratch (ordered on the compute stream).
template <typename T>
std::unique_ptr<Scratch> Upload(DeviceState& s, const std::vector<T>& v) {
  auto buf = std::make_unique<Scratch>(s, v.size() * sizeof(T));
  if (!v.empty()) {
    QUANTA_CUDA_CHECK(cudaMemcpyAsync(buf->get(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice, s.stream));
  }
  return buf;
}

// ---- tensors as kernel operands ---------------------------------------------------

Geometry GeometryOf(const Shape& shape) {
  QUANTA_CHECK(shape.size() <= kMaxRank, "cuda: rank ", shape.size(), " above ", kMaxRank);
  Geometry g;
  g.rank = static_cast<int>(shape.size());
  g.numel = NumElements(shape);
  for (int d = 0; d < g.rank; ++d) g.sizes[d] = shape[d];
  return g;
}

// t over the geometry of its own shape (operands of one op share a shape).
Operand OperandOf(const Tensor& t) {
  QUANTA_CHECK(t.dim() <= kMaxRank, "cuda: rank ", t.dim(), " above ", kMaxRank, " (", t.Describe(), ")");
  Operand o;
  o.base = t.storage() ? t.storage()->data() : nullptr;
  o.dtype = t.dtype();
  o.offset = t.offset();
  for (int d = 0; d < t.dim(); ++d) o.strides[d] = t.stride(d);
  o.contiguous = t.is_contiguous();
  return o;
}

// ---- elementwise, reductions, random ------------------------------------------------

void UnaryKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  QUANTA_LAUNCH_CHECK(c, LaunchUnary(c.op, GeometryOf(c.out[0].shape()), OperandOf(c.out[0]), OperandOf(c.in[0]), s.stream));
}

void BinaryKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  QUANTA_LAUNCH_CHECK(c, LaunchBinary(c.op, GeometryOf(c.out[0].shape()), OperandOf(c.out[0]), OperandOf(c.in[0]),
                                      OperandOf(c.in[1]), s.stream));
}

void WhereKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  QUANTA_LAUNCH_CHECK(c, LaunchWhere(GeometryOf(c.out[0].shape()), OperandOf(c.out[0]), OperandOf(c.in[0]),
                                     OperandOf(c.in[1]), OperandOf(c.in[2]), s.stream));
}

void CopyKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor &x = c.in[0], &y = c.out[0];
  if (x.dtype() == y.dtype() && x.is_contiguous() && y.is_contiguous() && x.dtype() != DType::kQInt4) {
    size_t bytes = StorageBytes(x.dtype(), x.numel());
    if (bytes > 0) QUANTA_CUDA_CHECK(cudaMemcpyAsync(y.raw_data(), x.raw_data(), bytes, cudaMemcpyDeviceToDevice, s.stream));
    return;
  }
  QUANTA_LAUNCH_CHECK(c, LaunchCopy(GeometryOf(y.shape()), OperandOf(y), OperandOf(x), s.stream));
}

void FillKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  QUANTA_LAUNCH_CHECK(c, LaunchFill(GeometryOf(c.out[0].shape()), OperandOf(c.out[0]), c.attrs.scalar, s.stream));
}

void ArangeKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor& y = c.out[0];
  QUANTA_LAUNCH_CHECK(c, LaunchArange(y.numel(), OperandOf(y), y.dim() ? y.stride(0) : 1, c.attrs.scalar,
                                      c.attrs.scalar2, s.stream));
}

void RandomKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor& y = c.out[0];
  QUANTA_CHECK(y.is_contiguous(), OpName(c.op), ": output must be contiguous (", y.Describe(), ")");
  QUANTA_LAUNCH_CHECK(c, LaunchRandom(c.op, y.numel(), OperandOf(y), c.attrs.seed, c.attrs.offset, c.attrs.scalar,
                                      c.attrs.scalar2, s.stream));
}

// As the CPU's SplitForReduction: x over y's keepdim shape, and the reduced dims.
void ReduceKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor &x = c.in[0], &y = c.out[0];
  if (x.numel() == 0) {  // an empty sum
    QUANTA_LAUNCH_CHECK(c, LaunchFill(GeometryOf(y.shape()), OperandOf(y), 0.0, s.stream));
    return;
  }
  Shape outer_shape = x.shape(), inner_shape;
  Strides inner_strides;
  for (int64_t d : c.attrs.dims) {
    outer_shape[d] = 1;
    inner_shape.push_back(x.size(d));
    inner_strides.push_back(x.stride(d));
  }
  Tensor outer = x.AsStrided(outer_shape, x.strides(), x.offset());
  Tensor inner = x.AsStrided(inner_shape, inner_strides, 0);
  Operand x_inner = OperandOf(inner);
  x_inner.offset = 0;
  // y has x's rank, reduced dims at 1 (the frontend views it down afterwards).
  QUANTA_LAUNCH_CHECK(c, LaunchReduce(c.op, GeometryOf(outer_shape), OperandOf(y), OperandOf(outer),
                                      GeometryOf(inner_shape), x_inner, s.stream));
}

// ---- matmul --------------------------------------------------------------------------

// One operand (..., R, C) as cuBLAS sees it: a matrix per batch element at a
// fixed stride, row-major (ld = row stride) or transposed (ld = column stride).
struct GemmOperand {
  Tensor t;
  bool transposed = false;
  int64_t ld = 0, batch_stride = 0;
};

// The batch dims of t (broadcast against `batch`) collapse to one stride: 0 when
// all are broadcast, else the stride of the innermost non-trivial dim, provided
// the others nest. Otherwise t is packed.
GemmOperand AsGemmOperand(const Tensor& t_in, const Shape& batch) {
  GemmOperand g;
  int nb = static_cast<int>(batch.size());
  auto try_layout = [&](const Tensor& t) {
    int64_t R = t.size(-2), C = t.size(-1);
    bool row_major = t.stride(-1) == 1 || C == 1;
    bool col_major = t.stride(-2) == 1 || R == 1;
    if (row_major && t.stride(-2) >= std::max<int64_t>(C, 1)) {
      g.transposed = false, g.ld = std::max<int64_t>(t.stride(-2), C);
    } else if (col_major && t.stride(-1) >= std::max<int64_t>(R, 1)) {
      g.transposed = true, g.ld = std::max<int64_t>(t.stride(-1), R);
    } else {
      return false;
    }
    if (R == 1 && C == 1) g.transposed = false, g.ld = 1;
    // Batch: every broadcast dim (size 1 in t) has stride 0 effectively.
    int64_t expected = -1;
    int64_t count = 1;
    for (int d = nb - 1; d >= 0; --d) {
      if (t.size(d) == 1) continue;
      if (expected < 0) {
        g.batch_stride = t.stride(d);
        expected = t.stride(d) * t.size(d);
        count = t.size(d);
      } else {
        if (t.stride(d) != expected) return false;
        expected *= t.size(d);
        count *= t.size(d);
      }
    }
    if (expected < 0) {
      g.batch_stride = 0;
      return true;
    }
    return count == NumElements(batch);  // broadcast only all-or-nothing
  };
  if (try_layout(t_in)) {
    g.t = t_in;
    return g;
  }
  Shape full = batch;
  full.push_back(t_in.size(-2));
  full.push_back(t_in.size(-1));
  g.t = t_in.Expand(full).Contiguous();
  QUANTA_CHECK(try_layout(g.t), "matmul: could not lay out ", t_in.Describe());
  return g;
}

void MatmulKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor& y = c.out[0];
  Shape batch(y.shape().begin(), y.shape().end() - 2);
  int64_t M = y.size(-2), N = y.size(-1), K = c.in[0].size(-1), count = NumElements(batch);
  if (y.numel() == 0) return;
  if (K == 0) {
    QUANTA_LAUNCH_CHECK(c, LaunchFill(GeometryOf(y.shape()), OperandOf(y), 0.0, s.stream));
    return;
  }
  GemmOperand a = AsGemmOperand(c.in[0], batch), b = AsGemmOperand(c.in[1], batch);
  DType dtype = y.dtype();
  if (!IsFloating(dtype)) {  // integer matmul: plain loops
    auto matrix = [](const GemmOperand& g) {
      const Tensor& t = g.t;
      return MatrixOperand{t.storage()->data(), t.offset(), g.batch_stride, t.stride(-2), t.stride(-1)};
    };
    QUANTA_LAUNCH_CHECK(c, LaunchMatmulLoops(dtype, count, M, N, K, matrix(a), matrix(b), y.raw_data(), s.stream));
    return;
  }
  cudaDataType_t type = dtype == DType::kF32 ? CUDA_R_32F : dtype == DType::kF64 ? CUDA_R_64F
                        : dtype == DType::kF16 ? CUDA_R_16F : CUDA_R_16BF;
  cublasComputeType_t compute = dtype == DType::kF64 ? CUBLAS_COMPUTE_64F
                                : (dtype == DType::kF32 && GlobalOptions().tf32) ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                                                 : CUBLAS_COMPUTE_32F;
  const float one_f = 1, zero_f = 0;
  const double one_d = 1, zero_d = 0;
  const void* one = dtype == DType::kF64 ? static_cast<const void*>(&one_d) : &one_f;
  const void* zero = dtype == DType::kF64 ? static_cast<const void*>(&zero_d) : &zero_f;
  // Row-major Y = A B is column-major Y^T = B^T A^T: B goes first.
  QUANTA_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      Blas(s), b.transposed ? CUBLAS_OP_T : CUBLAS_OP_N, a.transposed ? CUBLAS_OP_T : CUBLAS_OP_N,
      static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), one, b.t.raw_data(), type, static_cast<int>(b.ld),
      b.batch_stride, a.t.raw_data(), type, static_cast<int>(a.ld), a.batch_stride, zero, y.raw_data(), type,
      static_cast<int>(N), M * N, static_cast<int>(count), compute, CUBLAS_GEMM_DEFAULT));
}

// ---- convolution ------------------------------------------------------------------------

ConvGeometry ConvGeometryOf(const Tensor& x, const Shape& w, const Shape& y, const OpAttrs& at) {
  ConvGeometry g{};
  g.N = x.size(0), g.C = x.size(1), g.H = x.size(2), g.W = x.size(3);
  g.O = w[0], g.CG = w[1], g.KH = w[2], g.KW = w[3];
  g.OH = y[2], g.OW = y[3], g.G = at.groups;
  for (int i = 0; i < 2; ++i) {
    g.stride[i] = at.stride[i], g.padding[i] = at.padding[i], g.dilation[i] = at.dilation[i];
  }
  for (int d = 0; d < 4; ++d) g.x_strides[d] = x.stride(d);
  return g;
}

cudnnDataType_t DnnType(DType d) {
  switch (d) {
    case DType::kF32: return CUDNN_DATA_FLOAT;
    case DType::kF64: return CUDNN_DATA_DOUBLE;
    case DType::kF16: return CUDNN_DATA_HALF;
    default: return CUDNN_DATA_BFLOAT16;
  }
}

// The descriptors of one convolution problem (NCHW, contiguous).
struct DnnConv {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  std::string key;

  DnnConv(const ConvGeometry& g, DType dtype) {
    cudnnDataType_t t = DnnType(dtype);
    QUANTA_CUDNN_CHECK(cudnnCreateTensorDescriptor(&x));
    QUANTA_CUDNN_CHECK(cudnnCreateTensorDescriptor(&y));
    QUANTA_CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
    QUANTA_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv));
    QUANTA_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, t, g.N, g.C, g.H, g.W));
    QUANTA_CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NCHW, t, g.N, g.O, g.OH, g.OW));
    QUANTA_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w, t, CUDNN_TENSOR_NCHW, g.O, g.CG, g.KH, g.KW));
    cudnnDataType_t compute = dtype == DType::kF64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
    QUANTA_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv, g.padding[0], g.padding[1], g.stride[0], g.stride[1],
                                                       g.dilation[0], g.dilation[1], CUDNN_CROSS_CORRELATION, compute));
    QUANTA_CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv, static_cast<int>(g.G)));
    // Note [TF32 is opt-in]: f32 stays f32 (FMA math) unless the "tf32" option
    // is on, so that results compare with the CPU backend; f16/bf16 use tensor cores.
    cudnnMathType_t math = dtype == DType::kF16 || dtype == DType::kBF16 ? CUDNN_TENSOR_OP_MATH
                           : dtype == DType::kF32 && GlobalOptions().tf32 ? CUDNN_DEFAULT_MATH
                                                                          : CUDNN_FMA_MATH;
    QUANTA_CUDNN_CHECK(cudnnSetConvolutionMathType(conv, math));
    key = absl::StrCat(static_cast<int>(dtype), ":", g.N, ",", g.C, ",", g.H, ",", g.W, ",", g.O, ",", g.CG, ",", g.KH,
                       ",", g.KW, ",", g.stride[0], ",", g.stride[1], ",", g.padding[0], ",", g.padding[1], ",",
                       g.dilation[0], ",", g.dilation[1], ",", g.G, ",", static_cast<int>(math));
  }
  ~DnnConv() {
    cudnnDestroyTensorDescriptor(x);
    cudnnDestroyTensorDescriptor(y);
    cudnnDestroyFilterDescriptor(w);
    cudnnDestroyConvolutionDescriptor(conv);
  }
};

// Picks (once per problem and direction) the fastest algorithm cuDNN's
// heuristics rank first that fits the workspace limit.
template <typename Perf, typename Query>
int PickAlgorithm(DeviceState& s, const std::string& key, Query query) {
  {
    std::lock_guard<std::mutex> lock(s.algo_mu);
    auto it = s.algorithms.find(key);
    if (it != s.algorithms.end()) return it->second;
  }
  constexpr size_t kWorkspaceLimit = size_t{1} << 30;
  Perf perf[16];
  int found = 0;
  QUANTA_CUDNN_CHECK(query(perf, 16, &found));
  int algo = -1;
  for (int i = 0; i < found; ++i) {
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= kWorkspaceLimit) {
      algo = static_cast<int>(perf[i].algo);
      break;
    }
  }
  QUANTA_CHECK(algo >= 0, "cudnn: no convolution algorithm for ", key);
  std::lock_guard<std::mutex> lock(s.algo_mu);
  s.algorithms[key] = algo;
  return algo;
}

const void* DnnOne(DType d) {
  static const float f = 1;
  static const double dd = 1;
  return d == DType::kF64 ? static_cast<const void*>(&dd) : &f;
}
const void* DnnZero(DType d) {
  static const float f = 0;
  static const double dd = 0;
  return d == DType::kF64 ? static_cast<const void*>(&dd) : &f;
}

void AddBias(const KernelCall& c, DeviceState& s, const Tensor& y, const Tensor& bias) {
  Tensor b = bias.View({1, bias.size(0), 1, 1}).Expand(y.shape());
  Operand yo = OperandOf(y);
  QUANTA_LAUNCH_CHECK(c, LaunchBinary(Op::kAdd, GeometryOf(y.shape()), yo, yo, OperandOf(b), s.stream));
}

// Images per implicit-GEMM chunk: the column buffer stays under ~256 MiB.
int64_t ChunkImages(const ConvGeometry& g, DType dtype) {
  int64_t per_image = g.CG * g.KH * g.KW * g.OH * g.OW * (Info(dtype).bits / 8);
  return std::max<int64_t>(1, std::min<int64_t>(g.N, (int64_t{256} << 20) / std::max<int64_t>(per_image, 1)));
}

cudaDataType_t BlasType(DType d) {
  return d == DType::kF32 ? CUDA_R_32F : d == DType::kF64 ? CUDA_R_64F : d == DType::kF16 ? CUDA_R_16F : CUDA_R_16BF;
}
cublasComputeType_t BlasCompute(DType d) {
  return d == DType::kF64 ? CUBLAS_COMPUTE_64F
         : (d == DType::kF32 && GlobalOptions().tf32) ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

// Column-major GEMM C (m x n, ldc) = op(A) (m x k) op(B) (k x n), batched by stride.
void Gemm(DeviceState& s, DType dtype, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void* A, int64_t lda,
          int64_t sa, const void* B, int64_t ldb, int64_t sb, bool accumulate, void* C, int64_t ldc, int64_t sc,
          int64_t batch) {
  const float one_f = 1, zero_f = 0;
  const double one_d = 1, zero_d = 0;
  bool f64 = dtype == DType::kF64;
  const void* alpha = f64 ? static_cast<const void*>(&one_d) : &one_f;
  const void* beta = accumulate ? alpha : (f64 ? static_cast<const void*>(&zero_d) : &zero_f);
  cudaDataType_t t = BlasType(dtype);
  QUANTA_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      Blas(s), ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(m), static_cast<int>(n),
      static_cast<int>(k), alpha, A, t, static_cast<int>(lda), sa, B, t, static_cast<int>(ldb), sb, beta, C, t,
      static_cast<int>(ldc), sc, static_cast<int>(batch), BlasCompute(dtype), CUBLAS_GEMM_DEFAULT));
}

size_t ElementSize(DType d) { return static_cast<size_t>(Info(d).bits / 8); }

// x (N, C, H, W), w (O, C/G, KH, KW) [, bias (O)] -> y (N, O, OH, OW), all contiguous.
void Conv2dKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor &x = c.in[0], &w = c.in[1], &y = c.out[0];
  if (y.numel() == 0) return;
  ConvGeometry g = ConvGeometryOf(x, w.shape(), y.shape(), c.attrs);
  DType dtype = x.dtype();
  if (GlobalOptions().conv_cudnn) {
    DnnConv d(g, dtype);
    int algo = PickAlgorithm<cudnnConvolutionFwdAlgoPerf_t>(s, "fwd" + d.key, [&](auto* perf, int n, int* found) {
      return cudnnGetConvolutionForwardAlgorithm_v7(Dnn(s), d.x, d.w, d.conv, d.y, n, found, perf);
    });
    auto fwd = static_cast<cudnnConvolutionFwdAlgo_t>(algo);
    size_t ws = 0;
    QUANTA_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(Dnn(s), d.x, d.w, d.conv, d.y, fwd, &ws));
    Scratch workspace(s, ws);
    QUANTA_CUDNN_CHECK(cudnnConvolutionForward(Dnn(s), DnnOne(dtype), d.x, x.raw_data(), d.w, w.raw_data(), d.conv, fwd,
                                               workspace.get(), ws, DnnZero(dtype), d.y, y.raw_data()));
  } else {
    // Implicit GEMM: per chunk of images and group, Y_g (OG, pixels) = W_g (OG, K) col (K, pixels).
    int64_t K = g.CG * g.KH * g.KW, pixels = g.OH * g.OW, OG = g.O / g.G, chunk = ChunkImages(g, dtype);
    Scratch col(s, chunk * K * pixels * ElementSize(dtype));
    size_t es = ElementSize(dtype);
    for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
      int64_t count = std::min(chunk, g.N - n0);
      for (int64_t gi = 0; gi < g.G; ++gi) {
        QUANTA_LAUNCH_CHECK(c, LaunchIm2col(g, dtype, x.raw_data(), n0, count, gi, col.get(), s.stream));
        // Column-major: Y^T (pixels x OG) = col^T (pixels x K) W^T (K x OG).
        Gemm(s, dtype, false, false, pixels, OG, K, col.get(), pixels, K * pixels,
             static_cast<const char*>(w.raw_data()) + gi * OG * K * es, K, 0, false,
             static_cast<char*>(y.raw_data()) + ((n0 * g.O) + gi * OG) * pixels * es, pixels, g.O * pixels, count);
      }
    }
  }
  if (c.in.size() > 2) AddBias(c, s, y, c.in[2]);
}

// grad_out (N, O, OH, OW), w (O, C/G, KH, KW) -> grad_in (N, C, H, W).
void Conv2dBackwardInputKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor &gy = c.in[0], &w = c.in[1], &gx = c.out[0];
  if (gx.numel() == 0) return;
  ConvGeometry g = ConvGeometryOf(gx, w.shape(), gy.shape(), c.attrs);
  DType dtype = gy.dtype();
  if (gy.numel() == 0 || w.numel() == 0) {
    QUANTA_LAUNCH_CHECK(c, LaunchFill(GeometryOf(gx.shape()), OperandOf(gx), 0.0, s.stream));
    return;
  }
  if (GlobalOptions().conv_cudnn) {
    DnnConv d(g, dtype);
    int algo = PickAlgorithm<cudnnConvolutionBwdDataAlgoPerf_t>(s, "bwd_data" + d.key, [&](auto* perf, int n, int* found) {
      return cudnnGetConvolutionBackwardDataAlgorithm_v7(Dnn(s), d.w, d.y, d.conv, d.x, n, found, perf);
    });
    auto bwd = static_cast<cudnnConvolutionBwdDataAlgo_t>(algo);
    size_t ws = 0;
    QUANTA_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(Dnn(s), d.w, d.y, d.conv, d.x, bwd, &ws));
    Scratch workspace(s, ws);
    QUANTA_CUDNN_CHECK(cudnnConvolutionBackwardData(Dnn(s), DnnOne(dtype), d.w, w.raw_data(), d.y, gy.raw_data(), d.conv,
                                                    bwd, workspace.get(), ws, DnnZero(dtype), d.x, gx.raw_data()));
    return;
  }
  int64_t K = g.CG * g.KH * g.KW, pixels = g.OH * g.OW, OG = g.O / g.G, chunk = ChunkImages(g, dtype);
  size_t es = ElementSize(dtype);
  Scratch col(s, chunk * K * pixels * es);
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    int64_t count = std::min(chunk, g.N - n0);
    for (int64_t gi = 0; gi < g.G; ++gi) {
      // Column-major: col^T (pixels x K) = gy^T (pixels x OG) W_g (OG x K).
      Gemm(s, dtype, false, true, pixels, K, OG, static_cast<const char*>(gy.raw_data()) + (n0 * g.O + gi * OG) * pixels * es,
           pixels, g.O * pixels, static_cast<const char*>(w.raw_data()) + gi * OG * K * es, K, 0, false, col.get(), pixels,
           K * pixels, count);
      QUANTA_LAUNCH_CHECK(c, LaunchCol2im(g, dtype, col.get(), n0, count, gi, gx.raw_data(), s.stream));
    }
  }
}

// grad_out (N, O, OH, OW), x (N, C, H, W) -> grad_w (O, C/G, KH, KW).
void Conv2dBackwardWeightKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor &gy = c.in[0], &x = c.in[1], &gw = c.out[0];
  if (gw.numel() == 0) return;
  ConvGeometry g = ConvGeometryOf(x, gw.shape(), gy.shape(), c.attrs);
  DType dtype = gy.dtype();
  if (gy.numel() == 0) {
    QUANTA_LAUNCH_CHECK(c, LaunchFill(GeometryOf(gw.shape()), OperandOf(gw), 0.0, s.stream));
    return;
  }
  if (GlobalOptions().conv_cudnn) {
    DnnConv d(g, dtype);
    int algo = PickAlgorithm<cudnnConvolutionBwdFilterAlgoPerf_t>(s, "bwd_filter" + d.key, [&](auto* perf, int n, int* found) {
      return cudnnGetConvolutionBackwardFilterAlgorithm_v7(Dnn(s), d.x, d.y, d.conv, d.w, n, found, perf);
    });
    auto bwd = static_cast<cudnnConvolutionBwdFilterAlgo_t>(algo);
    size_t ws = 0;
    QUANTA_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(Dnn(s), d.x, d.y, d.conv, d.w, bwd, &ws));
    Scratch workspace(s, ws);
    QUANTA_CUDNN_CHECK(cudnnConvolutionBackwardFilter(Dnn(s), DnnOne(dtype), d.x, x.raw_data(), d.y, gy.raw_data(),
                                                      d.conv, bwd, workspace.get(), ws, DnnZero(dtype), d.w,
                                                      gw.raw_data()));
    return;
  }
  int64_t K = g.CG * g.KH * g.KW, pixels = g.OH * g.OW, OG = g.O / g.G, chunk = ChunkImages(g, dtype);
  size_t es = ElementSize(dtype);
  Scratch col(s, chunk * K * pixels * es);
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    int64_t count = std::min(chunk, g.N - n0);
    for (int64_t gi = 0; gi < g.G; ++gi) {
      QUANTA_LAUNCH_CHECK(c, LaunchIm2col(g, dtype, x.raw_data(), n0, count, gi, col.get(), s.stream));
      // Column-major, per image: W_g^T (K x OG) += col (K x pixels)... as gw^T = col^T^T gy^T.
      for (int64_t i = 0; i < count; ++i) {
        Gemm(s, dtype, true, false, K, OG, pixels, static_cast<const char*>(col.get()) + i * K * pixels * es, pixels, 0,
             static_cast<const char*>(gy.raw_data()) + ((n0 + i) * g.O + gi * OG) * pixels * es, pixels, 0,
             n0 + i > 0, static_cast<char*>(gw.raw_data()) + gi * OG * K * es, K, 0, 1);
      }
    }
  }
}

// ---- pooling and indexing --------------------------------------------------------------

void MaxPool2dKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor &x = c.in[0], &y = c.out[0], &idx = c.out[1];
  QUANTA_CHECK(x.dtype() != DType::kQInt4, "max_pool2d: no kernel for qint4");
  const OpAttrs& at = c.attrs;
  PoolGeometry p{};
  p.N = x.size(0), p.C = x.size(1), p.H = x.size(2), p.W = x.size(3), p.OH = y.size(2), p.OW = y.size(3);
  for (int i = 0; i < 2; ++i) {
    p.kernel[i] = at.kernel[i], p.stride[i] = at.stride[i], p.padding[i] = at.padding[i], p.dilation[i] = at.dilation[i];
  }
  for (int d = 0; d < 4; ++d) p.x_strides[d] = x.stride(d), p.y_strides[d] = y.stride(d);
  // Indices left undefined (inference): values only.
  QUANTA_CHECK(!idx.defined() || y.strides() == idx.strides(), "max_pool2d: values and indices must share a layout");
  int64_t* indices = idx.defined() ? static_cast<int64_t*>(idx.storage()->data()) + idx.offset() : nullptr;
  QUANTA_LAUNCH_CHECK(c, LaunchMaxPool2d(p, x.dtype(), static_cast<const char*>(x.storage()->data()) + x.offset() * ElementSize(x.dtype()),
                                         static_cast<char*>(y.storage()->data()) + y.offset() * ElementSize(y.dtype()),
                                         indices, s.stream));
}

void MaxPool2dBackwardKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor &gy = c.in[0], &idx = c.in[1], &gx = c.out[0];
  QUANTA_LAUNCH_CHECK(c, LaunchMaxPool2dBackward(gy.dtype(), gx.size(0) * gx.size(1), gy.size(2) * gy.size(3),
                                                 gx.size(2) * gx.size(3), gy.raw_data(),
                                                 static_cast<const int64_t*>(idx.raw_data()), gx.raw_data(), s.stream));
}

void BatchNormKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor& x = c.in[0];
  const BatchNormEpilogue epilogue{c.attrs.residual ? c.in[3].raw_data() : nullptr, c.attrs.relu};
  QUANTA_LAUNCH_CHECK(c, LaunchBatchNorm(x.dtype(), x.size(0), x.size(1), x.size(2) * x.size(3), c.attrs.scalar,
                                         x.raw_data(), c.in[1].raw_data(), c.in[2].raw_data(), c.out[0].raw_data(),
                                         c.out[1].raw_data(), c.out[2].raw_data(), epilogue, s.stream));
}

void LayerNormKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor& x = c.in[0];
  QUANTA_LAUNCH_CHECK(c, LaunchLayerNorm(x.dtype(), c.out[1].numel(), c.in[1].numel(), c.attrs.scalar, x.raw_data(),
                                         c.in[1].raw_data(), c.in[2].raw_data(), c.out[0].raw_data(),
                                         c.out[1].raw_data(), c.out[2].raw_data(), s.stream));
}

void SoftmaxKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor& x = c.in[0];
  const int d = static_cast<int>(c.attrs.dims[0]);
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < d; ++i) outer *= x.size(i);
  for (int i = d + 1; i < x.dim(); ++i) inner *= x.size(i);
  QUANTA_LAUNCH_CHECK(c, LaunchSoftmax(x.dtype(), outer, x.size(d), inner, x.raw_data(), c.out[0].raw_data(), s.stream));
}

// With relu: in[5] bias, in[6] the residual; out[3] its gradient.
void BatchNormBackwardKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor& x = c.in[1];
  const bool residual = c.attrs.relu && c.attrs.residual;
  const BatchNormEpilogue epilogue{residual ? c.in[6].raw_data() : nullptr, c.attrs.relu};
  QUANTA_LAUNCH_CHECK(c, LaunchBatchNormBackward(x.dtype(), x.size(0), x.size(1), x.size(2) * x.size(3),
                                                 c.attrs.scalar, c.in[0].raw_data(), x.raw_data(), c.in[2].raw_data(),
                                                 c.in[3].raw_data(), c.in[4].raw_data(), c.out[0].raw_data(),
                                                 c.out[1].raw_data(), c.out[2].raw_data(),
                                                 c.attrs.relu ? c.in[5].raw_data() : nullptr, epilogue,
                                                 residual ? c.out[3].raw_data() : nullptr, s.stream));
}

// Runs an indexing kernel with a device slot for a bad index, then checks it
// (this synchronizes: an out-of-range index must throw, as on the CPU).
template <typename Launch>
void WithIndexCheck(const KernelCall& c, DeviceState& s, int64_t dim_size, Launch launch) {
  constexpr int64_t kNone = std::numeric_limits<int64_t>::min();
  Scratch bad(s, sizeof(int64_t));
  QUANTA_CUDA_CHECK(cudaMemcpyAsync(bad.get(), &kNone, sizeof(int64_t), cudaMemcpyHostToDevice, s.stream));
  QUANTA_LAUNCH_CHECK(c, launch(bad.get<int64_t>()));
  int64_t value = kNone;
  QUANTA_CUDA_CHECK(cudaMemcpyAsync(&value, bad.get(), sizeof(int64_t), cudaMemcpyDeviceToHost, s.stream));
  QUANTA_CUDA_CHECK(cudaStreamSynchronize(s.stream));
  QUANTA_CHECK(value == kNone, OpName(c.op), ": index ", value, " out of range for dim ", c.attrs.dims[0], " of size ",
               dim_size, " (", c.in[0].Describe(), ")");
}

void GatherKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor &x = c.in[0], &index = c.in[1], &y = c.out[0];
  int64_t d = c.attrs.dims[0];
  Strides xs = x.strides();
  xs[d] = 0;
  Tensor x_base = x.AsStrided(y.shape(), xs, x.offset());
  WithIndexCheck(c, s, x.size(d), [&](int64_t* bad) {
    return LaunchGather(GeometryOf(y.shape()), OperandOf(y), OperandOf(x_base), OperandOf(index), x.stride(d), x.size(d),
                        bad, s.stream);
  });
}

void ScatterAddKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor &src = c.in[0], &index = c.in[1], &y = c.out[0];
  int64_t d = c.attrs.dims[0];
  Strides ys = y.strides();
  ys[d] = 0;
  Tensor y_base = y.AsStrided(src.shape(), ys, y.offset());
  WithIndexCheck(c, s, y.size(d), [&](int64_t* bad) {
    return LaunchScatterAdd(GeometryOf(src.shape()), OperandOf(y_base), OperandOf(src), OperandOf(index), y.stride(d),
                            y.size(d), bad, s.stream);
  });
}

// ---- quantization --------------------------------------------------------------------------

void QuantizeKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor& q = c.out[0];
  QUANTA_LAUNCH_CHECK(c, LaunchQuantize(GeometryOf(q.shape()), OperandOf(q), OperandOf(c.in[0]), OperandOf(c.in[1]),
                                        OperandOf(c.in[2]), c.attrs.quant_min, c.attrs.quant_max, s.stream));
}

void DequantizeKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor& x = c.out[0];
  QUANTA_LAUNCH_CHECK(c, LaunchDequantize(GeometryOf(x.shape()), OperandOf(x), OperandOf(c.in[0]), OperandOf(c.in[1]),
                                          OperandOf(c.in[2]), s.stream));
}

void FakeQuantizeKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor& y = c.out[0];
  QUANTA_LAUNCH_CHECK(c, LaunchFakeQuantize(GeometryOf(y.shape()), OperandOf(y), OperandOf(c.in[0]), OperandOf(c.in[1]),
                                            OperandOf(c.in[2]), c.attrs.quant_min, c.attrs.quant_max, s.stream));
}

void FakeQuantizeBackwardKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const OpAttrs& at = c.attrs;
  bool ewgs = at.fake_quant_gradient == static_cast<int>(FakeQuantGradient::kEwgs);
  QUANTA_LAUNCH_CHECK(c, LaunchFakeQuantizeBackward(
                             GeometryOf(c.in[1].shape()), OperandOf(c.out[0]), OperandOf(c.out[1]), OperandOf(c.out[2]),
                             OperandOf(c.in[0]), OperandOf(c.in[1]), OperandOf(c.in[2]), OperandOf(c.in[3]), at.quant_min,
                             at.quant_max, ewgs, at.ewgs_delta, at.lsq_grad_scale, s.stream));
}

// Block-scaled minifloats (Note [Block scaling] in core/minifloat.h); x, the
// codes and the scales arrive contiguous (core/ops.cc).
BlockShape BlockShapeOf(const KernelCall& c, const Tensor& x) {
  BlockShape b;
  b.rows = c.attrs.block[0];
  b.cols = c.attrs.block[1];
  b.matrix_cols = x.size(-1);
  b.matrix_rows = x.dim() >= 2 ? x.size(-2) : 1;
  b.n_blocks = x.numel() / (b.rows * b.cols);
  return b;
}

const MiniFloatFormat* BlockScaleFormat(DType d) { return d == DType::kF32 ? nullptr : &MiniFloatOf(d); }

void BlockQuantizeKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor &x = c.in[0], &codes = c.out[0], &scales = c.out[1];
  QUANTA_LAUNCH_CHECK(c, LaunchBlockQuantize(BlockShapeOf(c, x), x.dtype(), x.raw_data(), MiniFloatOf(codes.dtype()),
                                             BlockScaleFormat(scales.dtype()),
                                             static_cast<const float*>(c.in[1].raw_data()), codes.raw_data(),
                                             scales.raw_data(), s.stream));
}

void BlockDequantizeKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor &codes = c.in[0], &scales = c.in[1], &y = c.out[0];
  QUANTA_LAUNCH_CHECK(c, LaunchBlockDequantize(BlockShapeOf(c, codes), y.dtype(), y.raw_data(),
                                               MiniFloatOf(codes.dtype()), BlockScaleFormat(scales.dtype()),
                                               static_cast<const float*>(c.in[2].raw_data()), codes.raw_data(),
                                               scales.raw_data(), s.stream));
}

// ---- integer inference ---------------------------------------------------------------------

// Note [Integer epilogue on the device]: the int8 GEMM (cuBLASLt, s8 x s8 -> s32
// on tensor cores) sees only signed integers without zero points: quint8
// activations are shifted by -128 with their zero point, and the zero points
// come back in the epilogue as sum_k (a - za)(b - zb) = acc - za*colsum(b) -
// zb*rowsum(a) + K*za*zb, exactly (integers). Then the CPU reference's order:
// scale, bias, residual, ReLU, requantize (Note [One quantization formula]).
void Int8Gemm(const KernelCall& c, DeviceState& s, const int8_t* a, const int8_t* bt, int64_t M, int64_t N, int64_t K,
              int32_t* acc, int64_t ldc) {
  int64_t Mp = PadTo(M, 4), Np = PadTo(N, 4), Kp = PadTo(K, 16);
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  auto lt_ok = [](cublasStatus_t st) { return st == CUBLAS_STATUS_SUCCESS; };
  bool ok = lt_ok(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32I, CUDA_R_32I));
  cublasOperation_t transpose = CUBLAS_OP_T;
  ok = ok && lt_ok(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)));
  // Column-major: acc^T (Np x Mp, ldc) = bt^T (Np x Kp) a^T (Kp x Mp): "TN", both K-major.
  ok = ok && lt_ok(cublasLtMatrixLayoutCreate(&la, CUDA_R_8I, Kp, Np, Kp));
  ok = ok && lt_ok(cublasLtMatrixLayoutCreate(&lb, CUDA_R_8I, Kp, Mp, Kp));
  ok = ok && lt_ok(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32I, Np, Mp, ldc));
  int32_t one = 1, zero = 0;
  constexpr size_t kWorkspace = size_t{32} << 20;
  Scratch workspace(s, kWorkspace);
  ok = ok && lt_ok(cublasLtMatmul(BlasLt(s), op, &one, bt, la, a, lb, &zero, acc, lc, acc, lc, nullptr, workspace.get(),
                                  kWorkspace, s.stream));
  if (lc) cublasLtMatrixLayoutDestroy(lc);
  if (lb) cublasLtMatrixLayoutDestroy(lb);
  if (la) cublasLtMatrixLayoutDestroy(la);
  if (op) cublasLtMatmulDescDestroy(op);
  if (!ok) {  // a shape or device cuBLASLt refuses: the plain loops, counted (Note [No silent slow path])
    FindBackend(DeviceType::kCuda)->NoteFallback(c.op, absl::StrCat("int8 GEMM ", M, "x", K, " by ", K, "x", N,
                                                                    ": cuBLASLt refused it"));
    QUANTA_LAUNCH_CHECK(c, LaunchInt8GemmLoops(a, bt, Mp, Np, Kp, acc, ldc, s.stream));
  }
}

// The parts of Epilogue that come from the output, its parameters and the residual.
Epilogue EpilogueFor(const KernelCall& c, const Tensor& y, bool conv) {
  Epilogue e{};
  e.y = static_cast<char*>(y.storage()->data()) + y.offset() * ElementSize(y.dtype());
  e.y_dtype = y.dtype();
  if (conv) {
    e.y_strides[0] = y.stride(0), e.y_strides[1] = y.stride(1);
    e.y_pixel_strides[0] = y.stride(2), e.y_pixel_strides[1] = y.stride(3);
    e.OW = y.size(3);
  } else {
    e.y_strides[0] = y.stride(0), e.y_strides[1] = y.stride(1);
    e.OW = 1;
  }
  if (y.dtype() != DType::kF32) {
    const QuantParams& po = y.qparams();
    auto [qmin, qmax] = QuantRange(y.dtype(), po);
    e.so = po.scales[0], e.zo = static_cast<double>(po.zero_points[0]);
    e.qmin = static_cast<double>(qmin), e.qmax = static_cast<double>(qmax);
  }
  e.relu = c.attrs.relu;
  e.gelu = c.attrs.gelu;
  if (c.attrs.residual) {
    const Tensor& r = c.in.back();
    e.residual = static_cast<const char*>(r.storage()->data()) + r.offset() * ElementSize(r.dtype());
    e.residual_dtype = r.dtype();
    e.residual_strides[0] = r.stride(0), e.residual_strides[1] = r.stride(1);
    if (conv) e.residual_pixel_strides[0] = r.stride(2), e.residual_pixel_strides[1] = r.stride(3);
    if (r.is_quantized()) e.sr = r.qparams().scales[0], e.zr = static_cast<double>(r.qparams().zero_points[0]);
  }
  return e;
}

const Tensor* IntegerBias(const KernelCall& c) {
  return c.in.size() > 2u + (c.attrs.residual ? 1 : 0) ? &c.in[2] : nullptr;
}

// Per-output-channel weight scales and zero points, and the activation's shifted zero point.
struct IntegerParams {
  std::unique_ptr<Scratch> sb, zb;
  double sa, za;
};
IntegerParams ParamsFor(DeviceState& s, const Tensor& a, const Tensor& w, int64_t channels) {
  const QuantParams &pa = a.qparams(), &pw = w.qparams();
  std::vector<double> sb(channels), zb(channels);
  for (int64_t n = 0; n < channels; ++n) {
    size_t ch = pw.scheme == QScheme::kPerChannel ? static_cast<size_t>(n) : 0;
    sb[n] = pw.scales[ch];
    zb[n] = static_cast<double>(pw.zero_points[ch]);
  }
  double za = static_cast<double>(pa.zero_points[0]) - (a.dtype() == DType::kQUInt8 ? 128.0 : 0.0);
  return {Upload(s, sb), Upload(s, zb), pa.scales[0], za};
}

// a (M, K) quantized, b (K, N) qint8/qint4 [, bias (N)] [, residual] -> y (M, N).
void QuantizedMatmulKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor &a = c.in[0], &b = c.in[1], &y = c.out[0];
  int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  if (M * N == 0) return;
  int64_t Mp = PadTo(M, 4), Np = PadTo(N, 4), Kp = PadTo(K, 16);
  Scratch pa(s, Mp * Kp), pb(s, Np * Kp), acc(s, Mp * Np * sizeof(int32_t));
  Scratch rowsum(s, Mp * sizeof(int32_t)), colsum(s, Np * sizeof(int32_t));
  QUANTA_LAUNCH_CHECK(c, LaunchPackRows(a.dtype(), a.raw_data(), M, K, pa.get<int8_t>(), s.stream));
  QUANTA_LAUNCH_CHECK(c, LaunchPackColumns(b.dtype(), b.storage()->data(), b.offset(), K, N, pb.get<int8_t>(), s.stream));
  QUANTA_LAUNCH_CHECK(c, LaunchRowSums(pa.get<int8_t>(), Mp, Kp, rowsum.get<int32_t>(), s.stream));
  QUANTA_LAUNCH_CHECK(c, LaunchRowSums(pb.get<int8_t>(), Np, Kp, colsum.get<int32_t>(), s.stream));
  Int8Gemm(c, s, pa.get<int8_t>(), pb.get<int8_t>(), M, N, K, acc.get<int32_t>(), Np);
  IntegerParams p = ParamsFor(s, a, b, N);
  Epilogue e = EpilogueFor(c, y, /*conv=*/false);
  e.acc = acc.get<int32_t>(), e.ldc = Np;
  e.rows = M, e.cols = N, e.K = K, e.pixels = 1, e.first_image = 0, e.first_channel = 0;
  e.rowsum = rowsum.get<int32_t>(), e.colsum = colsum.get<int32_t>();
  e.sa = p.sa, e.za = p.za, e.sb = p.sb->get<double>(), e.zb = p.zb->get<double>();
  const Tensor* bias = IntegerBias(c);
  e.bias = bias ? static_cast<const float*>(bias->raw_data()) : nullptr;
  QUANTA_LAUNCH_CHECK(c, LaunchEpilogue(e, s.stream));
}

// x (N, C, H, W) quantized (contiguous or channels-last), w (O, C/G, KH, KW)
// qint8/qint4 symmetric [, bias (O)] [, residual] -> y (N, O, OH, OW) in x's layout.
void QuantizedConv2dKernel(const KernelCall& c) {
  DeviceState& s = StateOf(c);
  const Tensor &x = c.in[0], &w = c.in[1], &y = c.out[0];
  if (y.numel() == 0) return;
  ConvGeometry g = ConvGeometryOf(x, w.shape(), y.shape(), c.attrs);
  int64_t K = g.CG * g.KH * g.KW, Kp = PadTo(K, 16), pixels = g.OH * g.OW, OG = g.O / g.G, OGp = PadTo(OG, 4);
  // Images per chunk: the packed columns stay under ~256 MiB.
  int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(g.N, (int64_t{256} << 20) / std::max<int64_t>(pixels * Kp, 1)));
  int64_t rows_p = PadTo(chunk * pixels, 4);
  Scratch col(s, rows_p * Kp), pw(s, OGp * Kp), acc(s, rows_p * OGp * sizeof(int32_t));
  Scratch rowsum(s, rows_p * sizeof(int32_t)), colsum(s, OGp * sizeof(int32_t));
  IntegerParams p = ParamsFor(s, x, w, g.O);
  const Tensor* bias = IntegerBias(c);
  const void* x_data = static_cast<const char*>(x.storage()->data()) + x.offset();
  for (int64_t gi = 0; gi < g.G; ++gi) {
    QUANTA_LAUNCH_CHECK(c, LaunchPackConvWeights(g, w.dtype(), w.storage()->data(), w.offset(), gi, pw.get<int8_t>(), s.stream));
    QUANTA_LAUNCH_CHECK(c, LaunchRowSums(pw.get<int8_t>(), OGp, Kp, colsum.get<int32_t>(), s.stream));
    for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
      int64_t count = std::min(chunk, g.N - n0), rows = count * pixels;
      QUANTA_LAUNCH_CHECK(c, LaunchIm2colInt8(g, x.dtype(), x_data, x.qparams().zero_points[0], n0, count, gi,
                                              col.get<int8_t>(), s.stream));
      QUANTA_LAUNCH_CHECK(c, LaunchRowSums(col.get<int8_t>(), PadTo(rows, 4), Kp, rowsum.get<int32_t>(), s.stream));
      Int8Gemm(c, s, col.get<int8_t>(), pw.get<int8_t>(), rows, OG, K, acc.get<int32_t>(), OGp);
      Epilogue e = EpilogueFor(c, y, /*conv=*/true);
      e.acc = acc.get<int32_t>(), e.ldc = OGp;
      e.rows = rows, e.cols = OG, e.K = K, e.pixels = pixels, e.first_image = n0, e.first_channel = gi * OG;
      e.rowsum = rowsum.get<int32_t>(), e.colsum = colsum.get<int32_t>();
      e.sa = p.sa, e.za = p.za, e.sb = p.sb->get<double>(), e.zb = p.zb->get<double>();
      e.bias = bias ? static_cast<const float*>(bias->raw_data()) : nullptr;
      QUANTA_LAUNCH_CHECK(c, LaunchEpilogue(e, s.stream));
    }
  }
}

// ---- the backend -------------------------------------------------------------------------

// Note [Copy stream]: host->device copies of at least kStagedBytes (the data
// loader's batches, from its worker threads) go through a per-thread pinned
// buffer on a per-thread stream, so they overlap the compute stream's work; the
// copy stream first waits for everything queued on the compute stream (the
// destination block may have been freed by work still in flight), and the call
// returns when the data has landed.
constexpr size_t kStagedBytes = size_t{1} << 20;

struct ThreadCopy {
  cudaStream_t stream = nullptr;
  cudaEvent_t ready = nullptr;
  void* pinned = nullptr;
  size_t capacity = 0;
};

class CudaBackend : public Backend {
 public:
  CudaBackend() : Backend(DeviceType::kCuda) {
#define QUANTA_CUDA_SET(Name, str) SetKernel(Op::k##Name, &UnaryKernel);
    QUANTA_UNARY_OPS(QUANTA_CUDA_SET)
#undef QUANTA_CUDA_SET
#define QUANTA_CUDA_SET(Name, str) SetKernel(Op::k##Name, &BinaryKernel);
    QUANTA_BINARY_OPS(QUANTA_CUDA_SET)
    QUANTA_COMPARE_OPS(QUANTA_CUDA_SET)
#undef QUANTA_CUDA_SET
#define QUANTA_CUDA_SET(Name, str) SetKernel(Op::k##Name, &ReduceKernel);
    QUANTA_REDUCE_OPS(QUANTA_CUDA_SET)
#undef QUANTA_CUDA_SET
    SetKernel(Op::kCopy, &CopyKernel);
    SetKernel(Op::kFill, &FillKernel);
    SetKernel(Op::kArange, &ArangeKernel);
    SetKernel(Op::kWhere, &WhereKernel);
    SetKernel(Op::kMatmul, &MatmulKernel);
    SetKernel(Op::kConv2d, &Conv2dKernel);
    SetKernel(Op::kConv2dBackwardInput, &Conv2dBackwardInputKernel);
    SetKernel(Op::kConv2dBackwardWeight, &Conv2dBackwardWeightKernel);
    SetKernel(Op::kMaxPool2d, &MaxPool2dKernel);
    SetKernel(Op::kMaxPool2dBackward, &MaxPool2dBackwardKernel);
    SetKernel(Op::kBatchNorm, &BatchNormKernel);
    SetKernel(Op::kBatchNormBackward, &BatchNormBackwardKernel);
    SetKernel(Op::kLayerNorm, &LayerNormKernel);
    SetKernel(Op::kSoftmax, &SoftmaxKernel);
    SetKernel(Op::kGather, &GatherKernel);
    SetKernel(Op::kScatterAdd, &ScatterAddKernel);
    SetKernel(Op::kQuantize, &QuantizeKernel);
    SetKernel(Op::kDequantize, &DequantizeKernel);
    SetKernel(Op::kFakeQuantize, &FakeQuantizeKernel);
    SetKernel(Op::kFakeQuantizeBackward, &FakeQuantizeBackwardKernel);
    SetKernel(Op::kBlockQuantize, &BlockQuantizeKernel);
    SetKernel(Op::kBlockDequantize, &BlockDequantizeKernel);
    SetKernel(Op::kQuantizedMatmul, &QuantizedMatmulKernel);
    SetKernel(Op::kQuantizedConv2d, &QuantizedConv2dKernel);
    SetKernel(Op::kUniform, &RandomKernel);
    SetKernel(Op::kNormal, &RandomKernel);
    SetKernel(Op::kBernoulli, &RandomKernel);
    for (int i = 0; i < kNumOps; ++i) {
      QUANTA_CHECK(Supports(static_cast<Op>(i)) || IsStructural(static_cast<Op>(i)), "cuda backend: op ",
                   OpName(static_cast<Op>(i)), " has no kernel");
    }
  }

  std::string Unavailable() const override {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) return absl::StrCat("no usable CUDA device (", cudaGetErrorString(e), ")");
    if (n == 0) return "no CUDA device present";
    return "";
  }
  int DeviceCount() const override {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
  }

  void* Allocate(size_t bytes, int device) override { return State(device).allocator->Allocate(bytes); }
  void Free(void* ptr, size_t bytes, int device) override { State(device).allocator->Free(ptr, bytes); }

  void CopyFromHost(void* dst, const void* src, size_t bytes, int device) override {
    DeviceState& s = State(device);
    QUANTA_CUDA_CHECK(cudaSetDevice(device));
    if (bytes < kStagedBytes) {
      QUANTA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s.stream));
      return;
    }
    thread_local std::array<ThreadCopy, 16> copies;
    ThreadCopy& t = copies[device];
    if (t.stream == nullptr) {
      QUANTA_CUDA_CHECK(cudaStreamCreateWithFlags(&t.stream, cudaStreamNonBlocking));
      QUANTA_CUDA_CHECK(cudaEventCreateWithFlags(&t.ready, cudaEventDisableTiming));
    }
    if (t.capacity < bytes) {
      if (t.pinned) cudaFreeHost(t.pinned);
      t.pinned = nullptr;
      QUANTA_CUDA_CHECK(cudaHostAlloc(&t.pinned, bytes, cudaHostAllocDefault));
      t.capacity = bytes;
    }
    QUANTA_CUDA_CHECK(cudaEventRecord(t.ready, s.stream));
    QUANTA_CUDA_CHECK(cudaStreamWaitEvent(t.stream, t.ready, 0));
    std::memcpy(t.pinned, src, bytes);
    QUANTA_CUDA_CHECK(cudaMemcpyAsync(dst, t.pinned, bytes, cudaMemcpyHostToDevice, t.stream));
    QUANTA_CUDA_CHECK(cudaStreamSynchronize(t.stream));
  }
  void CopyToHost(void* dst, const void* src, size_t bytes, int device) override {
    DeviceState& s = State(device);
    QUANTA_CUDA_CHECK(cudaSetDevice(device));
    QUANTA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s.stream));
    QUANTA_CUDA_CHECK(cudaStreamSynchronize(s.stream));
  }
  void CopyOnDevice(void* dst, const void* src, size_t bytes, int device) override {
    DeviceState& s = State(device);
    QUANTA_CUDA_CHECK(cudaSetDevice(device));
    QUANTA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s.stream));
  }
  void Synchronize(int device) override {
    DeviceState& s = State(device);
    QUANTA_CUDA_CHECK(cudaSetDevice(device));
    QUANTA_CUDA_CHECK(cudaStreamSynchronize(s.stream));
  }

  std::string DeviceName(int device) const override {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, device) != cudaSuccess) return "";
    return absl::StrFormat("%s, sm_%d%d, %d SMs, %.1f GiB", p.name, p.major, p.minor, p.multiProcessorCount,
                           p.totalGlobalMem / 1073741824.0);
  }
  MemoryStats Memory(int device) const override { return State(device).allocator->Stats(); }
  void ResetPeakMemory(int device) override { State(device).allocator->ResetPeak(); }
  void EmptyCache(int device) override { State(device).allocator->Empty(); }

  void SetOption(const std::string& key, const std::string& value) override {
    if (key == "tf32" && (value == "0" || value == "1")) {
      GlobalOptions().tf32 = value == "1";
    } else if (key == "conv" && (value == "cudnn" || value == "gemm")) {
      GlobalOptions().conv_cudnn = value == "cudnn";
    } else {
      Backend::SetOption(key, value);
    }
  }
};

QUANTA_REGISTER_BACKEND(CudaBackend);

}  // namespace
}  // namespace quanta::cuda
