// Registers the CUDA backend (skeleton): cudaMalloc allocator, host<->device
// copies, fill/copy/add kernels and f32 matmul through cuBLAS. Ops it does not
// implement yet report "not supported on cuda:N" through core's dispatch.
#include <cuda_runtime.h>
#include <cublas_v2.h>

#include <mutex>

#include "absl/strings/str_cat.h"
#include "backends/cuda/kernels.h"
#include "core/backend.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/tensor.h"

// Every CUDA and cuBLAS call goes through one of these: file and line on failure.
#define QUANTA_CUDA_CHECK(expr)                                                            \
  do {                                                                                     \
    cudaError_t quanta_err = (expr);                                                       \
    QUANTA_CHECK(quanta_err == cudaSuccess, "cuda: ", #expr, " failed: ",                  \
                 cudaGetErrorString(quanta_err), " at ", __FILE__, ":", __LINE__);         \
  } while (0)
#define QUANTA_CUBLAS_CHECK(expr)                                                          \
  do {                                                                                     \
    cublasStatus_t quanta_st = (expr);                                                     \
    QUANTA_CHECK(quanta_st == CUBLAS_STATUS_SUCCESS, "cublas: ", #expr, " failed: ",       \
                 cublasGetStatusString(quanta_st), " at ", __FILE__, ":", __LINE__);       \
  } while (0)
#define QUANTA_LAUNCH_CHECK(op, expr)                                                      \
  do {                                                                                     \
    std::string quanta_err = (expr);                                                       \
    QUANTA_CHECK(quanta_err.empty(), op, ": CUDA kernel launch failed: ", quanta_err,      \
                 " at ", __FILE__, ":", __LINE__);                                         \
  } while (0)

namespace quanta::cuda {
namespace {

StridedShape GeometryOf(const Shape& shape) {
  QUANTA_CHECK(shape.size() <= kMaxRank, "cuda: rank ", shape.size(), " above ", kMaxRank);
  StridedShape s;
  s.rank = static_cast<int>(shape.size());
  s.numel = NumElements(shape);
  for (int d = 0; d < s.rank; ++d) s.sizes[d] = shape[d];
  return s;
}

StridedOperand OperandOf(const Tensor& t) {
  StridedOperand o;
  o.offset = t.offset();
  for (int d = 0; d < t.dim(); ++d) o.strides[d] = t.stride(d);
  return o;
}

int ElementBytes(const KernelCall& c, const Tensor& t) {
  QUANTA_CHECK(Info(t.dtype()).bits % 8 == 0, OpName(c.op), ": ", t.Describe(),
               " is packed; the CUDA backend does not handle qint4 yet");
  return Info(t.dtype()).bits / 8;
}

void FillKernel(const KernelCall& c) {
  const Tensor& y = c.out[0];
  uint64_t bytes = 0;
  VisitDType(y.dtype(), [&]<typename T>(TypeTag<T>) {
    if constexpr (!std::is_same_v<T, QInt4x2>) {
      T v = Convert<T>(c.attrs.scalar);
      std::memcpy(&bytes, &v, sizeof(T));
    }
  });
  QUANTA_LAUNCH_CHECK("fill", LaunchFill(y.storage()->data(), GeometryOf(y.shape()), OperandOf(y),
                                         &bytes, ElementBytes(c, y)));
}

void CopyKernel(const KernelCall& c) {
  const Tensor& x = c.in[0];
  const Tensor& y = c.out[0];
  QUANTA_CHECK(x.dtype() == y.dtype(), "copy: casting ", x.Describe(), " to ", Name(y.dtype()),
               " is not implemented on cuda yet (cast on the cpu)");
  QUANTA_LAUNCH_CHECK("copy", LaunchCopy(y.storage()->data(), OperandOf(y), x.storage()->data(),
                                         OperandOf(x), GeometryOf(y.shape()), ElementBytes(c, y)));
}

void AddKernel(const KernelCall& c) {
  const Tensor& a = c.in[0];
  const Tensor& b = c.in[1];
  const Tensor& y = c.out[0];
  QUANTA_CHECK(a.dtype() == DType::kF32, "add: the CUDA backend handles f32 only so far, got ",
               a.Describe());
  QUANTA_LAUNCH_CHECK("add", LaunchAddF32(static_cast<float*>(y.storage()->data()), OperandOf(y),
                                          static_cast<const float*>(a.storage()->data()), OperandOf(a),
                                          static_cast<const float*>(b.storage()->data()), OperandOf(b),
                                          GeometryOf(y.shape())));
}

cublasHandle_t Handle() {
  static cublasHandle_t handle = [] {
    cublasHandle_t h;
    QUANTA_CUBLAS_CHECK(cublasCreate(&h));
    // Plain f32 (no TF32): results comparable with the CPU backend.
    QUANTA_CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    return h;
  }();
  return handle;
}

// Gives one operand (..., R, C) as contiguous matrices and the stride between
// them: 0 when every batch dim is 1 (broadcast), else R*C over y's batch.
std::pair<Tensor, int64_t> BatchOperand(const Tensor& t, const Shape& batch) {
  bool broadcast = true;
  for (int d = 0; d < t.dim() - 2; ++d) broadcast = broadcast && t.size(d) == 1;
  int64_t rc = t.size(-2) * t.size(-1);
  if (broadcast) return {t.Contiguous(), 0};
  Shape full = batch;
  full.push_back(t.size(-2));
  full.push_back(t.size(-1));
  return {t.Expand(full).Contiguous(), rc};
}

// a (..., M, K), b (..., K, N) -> y (..., M, N) contiguous, f32.
void MatmulKernel(const KernelCall& c) {
  const Tensor& y = c.out[0];
  QUANTA_CHECK(y.dtype() == DType::kF32, "matmul: the CUDA backend handles f32 only so far, got ",
               c.in[0].Describe());
  Shape batch(y.shape().begin(), y.shape().end() - 2);
  int64_t M = y.size(-2), N = y.size(-1), K = c.in[0].size(-1);
  int64_t count = NumElements(batch);
  if (y.numel() == 0) return;
  if (K == 0) {
    Tensor out = y;
    FillInplace(out, 0);
    return;
  }
  auto [a, stride_a] = BatchOperand(c.in[0], batch);
  auto [b, stride_b] = BatchOperand(c.in[1], batch);
  const float one = 1, zero = 0;
  // Row-major C = A B is column-major C^T = B^T A^T: pass B first.
  QUANTA_CUBLAS_CHECK(cublasSgemmStridedBatched(
      Handle(), CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(N), static_cast<int>(M),
      static_cast<int>(K), &one, static_cast<const float*>(b.raw_data()), static_cast<int>(N),
      stride_b, static_cast<const float*>(a.raw_data()), static_cast<int>(K), stride_a, &zero,
      static_cast<float*>(y.raw_data()), static_cast<int>(N), M * N, static_cast<int>(count)));
}

class CudaBackend : public Backend {
 public:
  CudaBackend() : Backend(DeviceType::kCuda) {
    SetKernel(Op::kFill, &FillKernel);
    SetKernel(Op::kCopy, &CopyKernel);
    SetKernel(Op::kAdd, &AddKernel);
    SetKernel(Op::kMatmul, &MatmulKernel);
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

  void* Allocate(size_t bytes, int device) override {
    QUANTA_CUDA_CHECK(cudaSetDevice(device));
    void* p = nullptr;
    QUANTA_CUDA_CHECK(cudaMalloc(&p, bytes));
    return p;
  }
  void Free(void* ptr, size_t, int device) override {
    cudaSetDevice(device);
    cudaFree(ptr);  // no throwing from destructors
  }
  void CopyFromHost(void* dst, const void* src, size_t bytes, int device) override {
    QUANTA_CUDA_CHECK(cudaSetDevice(device));
    QUANTA_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
  }
  void CopyToHost(void* dst, const void* src, size_t bytes, int device) override {
    QUANTA_CUDA_CHECK(cudaSetDevice(device));
    QUANTA_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
  }
  void CopyOnDevice(void* dst, const void* src, size_t bytes, int device) override {
    QUANTA_CUDA_CHECK(cudaSetDevice(device));
    QUANTA_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
  }
  void Synchronize(int device) override {
    QUANTA_CUDA_CHECK(cudaSetDevice(device));
    QUANTA_CUDA_CHECK(cudaDeviceSynchronize());
  }
};

QUANTA_REGISTER_BACKEND(CudaBackend);

}  // namespace
}  // namespace quanta::cuda
