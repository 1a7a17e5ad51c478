// CUDA kernels of the skeleton backend: strided fill, strided copy, and the
// elementwise add (AddFn from core/scalar_ops.h, the same math as the CPU's).
#include <cuda_runtime.h>

#include "backends/cuda/kernels.h"
#include "core/scalar_ops.h"

namespace quanta::cuda {
namespace {

constexpr int kThreads = 256;

__device__ inline int64_t StorageIndex(int64_t linear, const StridedShape& s, const StridedOperand& op) {
  int64_t index = op.offset;
  for (int d = s.rank - 1; d >= 0; --d) {
    int64_t i = linear % s.sizes[d];
    linear /= s.sizes[d];
    index += i * op.strides[d];
  }
  return index;
}

template <typename T>
__global__ void FillKernel(T* y, StridedShape s, StridedOperand yo, T value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < s.numel; i += int64_t(gridDim.x) * blockDim.x) {
    y[StorageIndex(i, s, yo)] = value;
  }
}

template <typename T>
__global__ void CopyKernel(T* y, StridedOperand yo, const T* x, StridedOperand xo, StridedShape s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < s.numel; i += int64_t(gridDim.x) * blockDim.x) {
    y[StorageIndex(i, s, yo)] = x[StorageIndex(i, s, xo)];
  }
}

__global__ void AddF32Kernel(float* y, StridedOperand yo, const float* a, StridedOperand ao,
                             const float* b, StridedOperand bo, StridedShape s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < s.numel; i += int64_t(gridDim.x) * blockDim.x) {
    y[StorageIndex(i, s, yo)] = AddFn{}(a[StorageIndex(i, s, ao)], b[StorageIndex(i, s, bo)]);
  }
}

int Blocks(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads > 65535 ? 65535 : (n + kThreads - 1) / kThreads); }

std::string LastError() {
  cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : cudaGetErrorString(e);
}

template <typename F>
std::string ByElementSize(int bytes, F&& f) {
  switch (bytes) {
    case 1: f(uint8_t{}); break;
    case 2: f(uint16_t{}); break;
    case 4: f(uint32_t{}); break;
    case 8: f(uint64_t{}); break;
    default: return "unsupported element size";
  }
  return LastError();
}

}  // namespace

std::string LaunchFill(void* base, const StridedShape& shape, const StridedOperand& y,
                       const void* value, int element_bytes) {
  if (shape.numel == 0) return "";
  return ByElementSize(element_bytes, [&](auto tag) {
    using T = decltype(tag);
    T v;
    memcpy(&v, value, sizeof(T));
    FillKernel<T><<<Blocks(shape.numel), kThreads>>>(static_cast<T*>(base), shape, y, v);
  });
}

std::string LaunchCopy(void* y_base, const StridedOperand& y, const void* x_base,
                       const StridedOperand& x, const StridedShape& shape, int element_bytes) {
  if (shape.numel == 0) return "";
  return ByElementSize(element_bytes, [&](auto tag) {
    using T = decltype(tag);
    CopyKernel<T><<<Blocks(shape.numel), kThreads>>>(static_cast<T*>(y_base), y,
                                                     static_cast<const T*>(x_base), x, shape);
  });
}

std::string LaunchAddF32(float* y_base, const StridedOperand& y, const float* a_base,
                         const StridedOperand& a, const float* b_base, const StridedOperand& b,
                         const StridedShape& shape) {
  if (shape.numel == 0) return "";
  AddF32Kernel<<<Blocks(shape.numel), kThreads>>>(y_base, y, a_base, a, b_base, b, shape);
  return LastError();
}

}  // namespace quanta::cuda
