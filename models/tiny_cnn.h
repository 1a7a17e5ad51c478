// A tiny CNN for tests and benchmarks on small images: conv3x3(8)-BN-ReLU,
// conv3x3 stride 2 (16)-BN-ReLU, global average pool, linear. Not a reference
// model for accuracy tables.
//
//   auto net = TinyCnn(/*seed=*/7, /*in_channels=*/1, /*classes=*/4);
#pragma once

#include <memory>

#include "nn/layers.h"

namespace quanta::models {

std::shared_ptr<nn::Sequential> TinyCnn(uint64_t seed, int64_t in_channels = 1, int64_t classes = 4);

}  // namespace quanta::models
