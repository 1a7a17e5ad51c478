// Initializers: draw with core's random ops, copy in without recording.
#include "nn/init.h"

#include <cmath>

#include "core/error.h"
#include "core/grad_mode.h"
#include "core/ops.h"

namespace quanta::nn {

std::pair<int64_t, int64_t> FanInOut(const Tensor& t) {
  QUANTA_CHECK(t.dim() >= 2, "init: fan in/out needs at least 2 dims, got ", t.Describe());
  int64_t receptive = 1;
  for (int d = 2; d < t.dim(); ++d) receptive *= t.size(d);
  return {t.size(1) * receptive, t.size(0) * receptive};
}

void UniformInit(Tensor& t, double low, double high, Generator* gen) {
  NoGradGuard no_grad;
  t.CopyFrom(Uniform(t.shape(), low, high, gen, t.dtype(), t.device()));
}

void NormalInit(Tensor& t, double mean, double std, Generator* gen) {
  NoGradGuard no_grad;
  t.CopyFrom(Normal(t.shape(), mean, std, gen, t.dtype(), t.device()));
}

void ConstantInit(Tensor& t, double value) {
  NoGradGuard no_grad;
  FillInplace(t, value);
}

namespace {
double KaimingStd(const Tensor& t, double a, FanMode mode) {
  auto [fan_in, fan_out] = FanInOut(t);
  double gain = std::sqrt(2.0 / (1 + a * a));
  return gain / std::sqrt(static_cast<double>(mode == FanMode::kFanIn ? fan_in : fan_out));
}
}  // namespace

void KaimingUniform(Tensor& t, Generator* gen, double a, FanMode mode) {
  double bound = std::sqrt(3.0) * KaimingStd(t, a, mode);
  UniformInit(t, -bound, bound, gen);
}

void KaimingNormal(Tensor& t, Generator* gen, double a, FanMode mode) {
  NormalInit(t, 0, KaimingStd(t, a, mode), gen);
}

void XavierUniform(Tensor& t, Generator* gen, double gain) {
  auto [fan_in, fan_out] = FanInOut(t);
  double bound = gain * std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  UniformInit(t, -bound, bound, gen);
}

void XavierNormal(Tensor& t, Generator* gen, double gain) {
  auto [fan_in, fan_out] = FanInOut(t);
  NormalInit(t, 0, gain * std::sqrt(2.0 / static_cast<double>(fan_in + fan_out)), gen);
}

}  // namespace quanta::nn
