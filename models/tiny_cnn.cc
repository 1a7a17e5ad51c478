// TinyCnn: the layers in order, initialized from the seed.
#include "models/tiny_cnn.h"

namespace quanta::models {

std::shared_ptr<nn::Sequential> TinyCnn(uint64_t seed, int64_t in_channels, int64_t classes) {
  Generator gen(seed);
  Conv2dOptions pad{.padding = {1, 1}}, down{.stride = {2, 2}, .padding = {1, 1}};
  return std::make_shared<nn::Sequential>(
      std::make_shared<nn::Conv2d>(in_channels, 8, 3, pad, false, &gen), std::make_shared<nn::BatchNorm2d>(8),
      std::make_shared<nn::ReLU>(), std::make_shared<nn::Conv2d>(8, 16, 3, down, false, &gen),
      std::make_shared<nn::BatchNorm2d>(16), std::make_shared<nn::ReLU>(), std::make_shared<nn::AdaptiveAvgPool2d>(1, 1),
      std::make_shared<nn::Flatten>(), std::make_shared<nn::Linear>(16, classes, true, &gen));
}

}  // namespace quanta::models
