// The reference kernels' shared pieces. The kernels live one op family per
// file (reference_unary.cc, reference_binary.cc, reference_elementwise.cc,
// reference_reductions.cc, reference_linear.cc, reference_indexing.cc,
// reference_quantization.cc, reference_integer.cc, reference_normalization.cc),
// each template instantiated over the dtypes in its own translation unit, so
// that no file takes long to compile (tools/compile_times.py); each file
// adds its kernels to the table that reference_kernels.cc checks is complete.
// Floating sums and dot products accumulate in f64, integer ones in i64.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "backends/cpu/strided.h"
#include "backends/cpu/vector_math.h"
#include "core/backend.h"
#include "core/generator.h"
#include "core/ops.h"
#include "core/scalar_ops.h"

namespace quanta::cpu {

using KernelTable = std::array<Kernel, kNumOps>;

// Visits plain (non-quantized) dtypes; throws for the rest.
template <typename F>
void VisitPlain(const KernelCall& c, DType dtype, F&& f) {
  QUANTA_CHECK(!IsQuantized(dtype), OpName(c.op), ": no kernel for quantized dtype ", Name(dtype));
  VisitDType(dtype, [&]<typename T>(TypeTag<T>) {
    if constexpr (!std::is_same_v<T, QInt4x2>) f(TypeTag<T>{});
  });
}

template <typename T>
using Acc = std::conditional_t<std::is_floating_point_v<Compute<T>>, double, int64_t>;

// Note [Dense sums]: the sum of f(j) for j in [0, n), in f64 over 8 partial
// sums, so that the loop vectorizes and the order is fixed (the same bits at
// any thread count). The dense reductions (reference_reductions.cc) and the
// row kernels (layer norm's mean and variance, softmax's sum) share it.
template <typename F>
double DenseSum(int64_t n, F&& f) {
  double part[8] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int l = 0; l < 8; ++l) part[l] += f(j + l);
  }
  for (; j < n; ++j) part[0] += f(j);
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

// Note [Extremes in lanes]: the largest (kMax) or smallest of p[0, n) as K,
// NaNs skipped and reported through *nan; the identity (-inf for the largest,
// +inf for the smallest) when n is 0 or every value is NaN. One running best is
// a chain of dependent vmaxss, one value per max's latency (perf annotate,
// bench_quant: 91% of the whole-tensor max's samples; over half of softmax's
// time at BERT's 128-value rows). Independent bests in two 512-bit registers'
// worth of lanes vectorize, and the pass becomes a memory stream. The result is
// the serial loop's but for the sign of a zero extreme.
template <bool kMax, typename K, typename T>
K DenseExtreme(const T* __restrict p, int64_t n, bool* nan) {
  constexpr int64_t kLanes = 128 / sizeof(K);
  using Mask = std::conditional_t<sizeof(K) == 4, int32_t, int64_t>;
  constexpr K kIdentity = kMax ? -std::numeric_limits<K>::infinity() : std::numeric_limits<K>::infinity();
  auto better = [](K v, K best) { return kMax ? (v > best ? v : best) : (v < best ? v : best); };
  K best = kIdentity;
  bool any_nan = false;
  int64_t j = 0;
  if (n >= 2 * kLanes) {
    K lane[kLanes];
    Mask bad[kLanes];
    for (int64_t k = 0; k < kLanes; ++k) lane[k] = kIdentity, bad[k] = 0;
    for (; j + kLanes <= n; j += kLanes) {
      for (int64_t k = 0; k < kLanes; ++k) {
        const K v = Convert<K>(p[j + k]);
        bad[k] |= v != v;
        lane[k] = better(v, lane[k]);
      }
    }
    for (int64_t k = 0; k < kLanes; ++k) any_nan |= bad[k] != 0, best = better(lane[k], best);
  }
  for (; j < n; ++j) {
    const K v = Convert<K>(p[j]);
    any_nan |= v != v;
    best = better(v, best);
  }
  *nan = any_nan;
  return best;
}

void AddUnaryKernels(KernelTable& t);
void AddBinaryKernels(KernelTable& t);
void AddElementwiseKernels(KernelTable& t);
void AddReductionKernels(KernelTable& t);
void AddLinearKernels(KernelTable& t);
void AddIndexingKernels(KernelTable& t);
void AddQuantizationKernels(KernelTable& t);
void AddIntegerKernels(KernelTable& t);
void AddNormalizationKernels(KernelTable& t);

}  // namespace quanta::cpu
