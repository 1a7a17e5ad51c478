// A small synthetic image task with a known answer, for tests and benchmarks:
// 4 classes of 1x12x12 images; class k brightens quadrant k by `signal` over
// unit Gaussian noise, so accuracy depends on `signal` (1.0: about 90% for a
// small CNN). Deterministic from the seed. Not a data set to report accuracy on.
//
//   QuadrantTask train = MakeQuadrantTask(512, /*seed=*/1, /*signal=*/1.0);
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace quanta::data {

struct QuadrantTask {
  Tensor images;  // f32 (N, 1, 12, 12)
  Tensor labels;  // i64 (N)
};
QuadrantTask MakeQuadrantTask(int64_t n, uint64_t seed, double signal);

}  // namespace quanta::data
