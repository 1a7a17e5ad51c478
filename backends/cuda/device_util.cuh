// Device-side helpers the .cu files share: the grid-stride loop, strided
// addressing of an Operand, and the dtype switch for launchers. Not a kernel.
#pragma once

#include <cuda_runtime.h>

#include <string>
#include <type_traits>

#include "backends/cuda/kernels.h"
#include "core/dtype.h"

namespace quanta::cuda {

inline constexpr int kThreads = 256;

#define QUANTA_GRID_LOOP(i, n)                                                       \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); \
       i += int64_t(gridDim.x) * blockDim.x)

inline int Blocks(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < 1 ? 1 : (b > 65535 * 4 ? 65535 * 4 : b));
}

inline std::string LastError() {
  cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : cudaGetErrorString(e);
}

inline cudaStream_t AsStream(Stream s) { return static_cast<cudaStream_t>(s); }

// Storage index of logical element `linear` of g in operand o.
__device__ inline int64_t At(const Operand& o, const Geometry& g, int64_t linear) {
  if (o.contiguous) return o.offset + linear;
  int64_t index = o.offset;
  for (int d = g.rank - 1; d >= 0; --d) {
    int64_t i = linear % g.sizes[d];
    linear /= g.sizes[d];
    index += i * o.strides[d];
  }
  return index;
}

template <typename T>
__device__ inline T LoadAs(const Operand& o, int64_t index) {
  return static_cast<const T*>(o.base)[index];
}

// Plain (unpacked) storage types: every dtype but qint4.
template <typename T>
inline constexpr bool kPlain = !std::is_same_v<T, QInt4x2>;

// Calls f(TypeTag<T>) for a plain storage type; "" or the reason it cannot.
template <typename F>
std::string VisitPlain(DType dtype, F&& f) {
  if (dtype == DType::kQInt4) return "qint4 is not handled by this kernel";
  std::string err;
  VisitDType(dtype, [&]<typename T>(TypeTag<T>) {
    if constexpr (kPlain<T>) err = f(TypeTag<T>{});
  });
  return err;
}

// Floating dtypes only (transcendental math).
template <typename T>
inline constexpr bool kFloating = std::is_floating_point_v<Compute<T>>;

}  // namespace quanta::cuda
