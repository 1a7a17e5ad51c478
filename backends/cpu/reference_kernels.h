// The reference kernels: plain, readable scalar loops for every op in
// core/ops.def. They are the truth that oneDNN's and CUDA's kernels are tested
// against, and the CPU backend's kernel wherever no fast path is registered.
#pragma once

#include "core/backend.h"

namespace quanta::cpu {

// The reference kernel of op (nullptr only for structural ops: views, concat).
Kernel ReferenceKernel(Op op);

}  // namespace quanta::cpu
