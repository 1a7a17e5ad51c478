// Reference kernels: one template per op family, instantiated over dtypes through
// VisitDType (backends/cpu/reference_common.h). This file assembles the table and
// checks that every op of core/ops.def has its kernel.
#include "backends/cpu/reference_kernels.h"

#include "backends/cpu/reference_common.h"

namespace quanta::cpu {
namespace {

struct Table {
  KernelTable kernels{};
  Table() {
    AddUnaryKernels(kernels);
    AddBinaryKernels(kernels);
    AddElementwiseKernels(kernels);
    AddReductionKernels(kernels);
    AddLinearKernels(kernels);
    AddIndexingKernels(kernels);
    AddQuantizationKernels(kernels);
    AddIntegerKernels(kernels);
    AddNormalizationKernels(kernels);
    for (int i = 0; i < kNumOps; ++i) {
      QUANTA_CHECK(kernels[i] != nullptr || IsStructural(static_cast<Op>(i)),
                   "reference kernels: op ", OpName(static_cast<Op>(i)), " has none");
    }
  }
};
// Adding an op to core/ops.def: give it a reference kernel in its family's file
// (and its Add*Kernels), then bump this.
static_assert(kNumOps == 63, "a new op needs its reference kernel in this table");

}  // namespace

Kernel ReferenceKernel(Op op) {
  static const Table* table = new Table();
  return table->kernels[static_cast<int>(op)];
}

}  // namespace quanta::cpu
