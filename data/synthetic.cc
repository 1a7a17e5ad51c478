// The quadrant task: noise, then class k's quadrant raised by `signal`.
#include "data/synthetic.h"

#include <vector>

#include "core/grad_mode.h"
#include "core/ops.h"

namespace quanta::data {

QuadrantTask MakeQuadrantTask(int64_t n, uint64_t seed, double signal) {
  Generator gen(seed);
  Tensor images = Normal({n, 1, 12, 12}, 0, 1, &gen);
  std::vector<int64_t> labels(n);
  NoGradGuard no_grad;
  for (int64_t i = 0; i < n; ++i) {
    int64_t k = (i * 7 + 3) % 4;
    labels[i] = k;
    Tensor quadrant = images.Select(0, i).Narrow(1, (k / 2) * 6, 6).Narrow(2, (k % 2) * 6, 6);
    quadrant.CopyFrom(Add(quadrant, signal));
  }
  return {images, Tensor::FromVector<int64_t>(labels, {n})};
}

}  // namespace quanta::data
