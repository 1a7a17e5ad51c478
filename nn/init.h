// Parameter initializers (in place, under no-grad), from a seedable generator.
// Fans follow PyTorch: fan_in = size(1) * receptive field, fan_out = size(0) * it.
//
//   KaimingNormal(conv.weight, &gen);                 // std = sqrt(2 / fan_in)
//   XavierUniform(linear.weight, &gen, /*gain=*/1.0);
#pragma once

#include <utility>

#include "core/generator.h"
#include "core/tensor.h"

namespace quanta::nn {

std::pair<int64_t, int64_t> FanInOut(const Tensor& t);
enum class FanMode { kFanIn, kFanOut };

// Kaiming (He et al. 2015): gain sqrt(2 / (1 + a^2)) for leaky ReLU slope a (0: ReLU).
void KaimingUniform(Tensor& t, Generator* gen = nullptr, double a = 0, FanMode mode = FanMode::kFanIn);
void KaimingNormal(Tensor& t, Generator* gen = nullptr, double a = 0, FanMode mode = FanMode::kFanIn);
// Xavier / Glorot: std = gain * sqrt(2 / (fan_in + fan_out)).
void XavierUniform(Tensor& t, Generator* gen = nullptr, double gain = 1.0);
void XavierNormal(Tensor& t, Generator* gen = nullptr, double gain = 1.0);
void UniformInit(Tensor& t, double low, double high, Generator* gen = nullptr);
void NormalInit(Tensor& t, double mean, double std, Generator* gen = nullptr);
void ConstantInit(Tensor& t, double value);

}  // namespace quanta::nn
