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
