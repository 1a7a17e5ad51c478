// IntegerLinear: a Linear run as an int8 GEMM (QuantizedMatmul: oneDNN VNNI on
// the CPU, cuBLASLt on a GPU) between float neighbours, for models whose
// integer program is not a chain of convolutions (BERT: LayerNorm, softmax and
// GELU stay in float). Activations are quantized with the QAT/PTQ input
// quantizer's parameters (static) or with each batch's own range (dynamic, as
// torch.ao.quantization.quantize_dynamic); weights with the weight quantizer's
// integers, or per-channel max-abs 8-bit when the Linear was never prepared.
//
//   auto q = IntegerLinear::From(*linear, {.dynamic = false});   // after QAT
//   Tensor y = q->Forward(x);          // x (..., in) f32 -> (..., out) f32
//   q->Bytes();                        // int8 (or packed int4) weight + f32 bias/scales
#pragma once

#include <memory>

#include "nn/layers.h"

namespace quanta::quant {

struct IntegerLinearOptions {
  bool dynamic = false;
};

class IntegerLinear : public nn::Layer {
 public:
  // Throws quanta::Error naming the layer's problem (a static conversion of a
  // layer whose input quantizer has seen no data, ...).
  static std::shared_ptr<IntegerLinear> From(const nn::Linear& linear, const IntegerLinearOptions& options);
  Tensor Forward(const Tensor& x) override;
  int64_t Bytes() const;

  Tensor weight;       // (in, out) qint8 or qint4, per output column (axis 1), zero points 0
  Tensor bias;         // (out) f32 or undefined
  bool dynamic = false;
  DType input_dtype = DType::kQInt8;
  QuantParams input_params;  // static: per tensor
};

}  // namespace quanta::quant
