// Shapes and strides (in elements), and the arithmetic on them: contiguity,
// NumPy broadcasting, dim wrapping. Pure functions, no storage.
//
//   Shape s = BroadcastShapes({2, 1, 3}, {4, 1});   // {2, 4, 3}
//   Strides st = ContiguousStrides({2, 3});          // {3, 1}
//   int d = WrapDim(-1, 3);                           // 2
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace quanta {

using Shape = std::vector<int64_t>;
using Strides = std::vector<int64_t>;

int64_t NumElements(const Shape& shape);
Strides ContiguousStrides(const Shape& shape);
std::string ShapeToString(const Shape& shape);  // "[2, 3]"

// NumPy broadcasting: dims align from the right, a dim of 1 stretches. Returns
// false (and leaves out untouched) when the shapes are incompatible.
bool TryBroadcastShapes(const Shape& a, const Shape& b, Shape* out);

// Dim in [-rank, rank) to [0, rank); -1 when out of range.
inline int WrapDimOrNeg(int64_t dim, int64_t rank) {
  if (dim < -rank || dim >= rank) return -1;
  return static_cast<int>(dim < 0 ? dim + rank : dim);
}

}  // namespace quanta
