// Launchers for the CUDA kernels, callable from plain C++ (no CUDA headers).
// Each takes device pointers and the geometry of its operands; the math comes
// from core/scalar_ops.h, shared with the CPU backend.
#pragma once

#include <cstdint>
#include <string>

namespace quanta::cuda {

inline constexpr int kMaxRank = 8;

// One operand's geometry in elements: the common shape lives in StridedShape.
struct StridedShape {
  int rank = 0;
  int64_t numel = 0;
  int64_t sizes[kMaxRank] = {};
};
struct StridedOperand {
  int64_t offset = 0;
  int64_t strides[kMaxRank] = {};
};

// Each returns "" on success or the CUDA error string.
std::string LaunchFill(void* base, const StridedShape& shape, const StridedOperand& y,
                       const void* value, int element_bytes);
std::string LaunchCopy(void* y_base, const StridedOperand& y, const void* x_base,
                       const StridedOperand& x, const StridedShape& shape, int element_bytes);
std::string LaunchAddF32(float* y_base, const StridedOperand& y, const float* a_base,
                         const StridedOperand& a, const float* b_base, const StridedOperand& b,
                         const StridedShape& shape);

}  // namespace quanta::cuda
