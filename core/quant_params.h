// Quantization parameters a quantized tensor carries: x = scale * (q - zero_point),
// per tensor or per channel along one axis (STYLE.md §8). Quantize/dequantize
// themselves live in quant/; this is only the data.
//
//   auto p = QuantParams::PerTensor(0.05, 3);
//   auto c = QuantParams::PerChannel({0.1, 0.2}, {0, 0}, /*axis=*/0);
//   Tensor q = Tensor::Empty({2, 3}, DType::kQInt8, Device::Cpu(), c);
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace quanta {

enum class QScheme : uint8_t { kPerTensor, kPerChannel };

struct QuantParams {
  QScheme scheme = QScheme::kPerTensor;
  int axis = 0;                     // kPerChannel only
  std::vector<double> scales;       // 1 (per tensor) or size(axis) values
  std::vector<int64_t> zero_points;
  // The integer range values are clamped to; both 0 means the dtype's full range.
  // Narrower ranges give bit widths below the container's (4-bit values in qint8).
  int64_t quant_min = 0, quant_max = 0;

  static QuantParams PerTensor(double scale, int64_t zero_point) {
    return {QScheme::kPerTensor, 0, {scale}, {zero_point}};
  }
  static QuantParams PerChannel(std::vector<double> scales, std::vector<int64_t> zero_points,
                                int axis) {
    return {QScheme::kPerChannel, axis, std::move(scales), std::move(zero_points)};
  }
  QuantParams WithRange(int64_t min, int64_t max) const {
    QuantParams p = *this;
    p.quant_min = min;
    p.quant_max = max;
    return p;
  }
  std::string ToString() const;
  bool operator==(const QuantParams&) const = default;
};

}  // namespace quanta
