// IntegerLinear: a Linear run as an int8 GEMM (QuantizedMatmul: oneDNN VNNI on
// the CPU, cuBLASLt on a GPU) between float neighbours, for models whose
// integer program is not a chain of convolutions (BERT: LayerNorm, softmax and
// GELU stay in float). Activations are quantized with the QAT/PTQ input
// quantizer's parameters (static) or with each batch's own range (dynamic, as
// torch.ao.quantization.quantize_dynamic); weights with the weight quantizer's
// integers, or per-channel max-abs 8-bit when the Linear was never prepared.
//
// IntegerEmbedding stores an Embedding table as int8 rows with one scale each
// (the 8-bit per-row quantizer PrepareQat gives embeddings) and dequantizes
// only the rows it looks up.
//
//   auto q = IntegerLinear::From(*linear, {.dynamic = false});   // after QAT
//   Tensor y = q->Forward(x);          // x (..., in) f32 -> (..., out) f32
//   q->Bytes();                        // int8 (or packed int4) weight + f32 bias/scales
//   auto e = IntegerEmbedding::From(*embedding);                  // a quarter of the f32 bytes
#pragma once

#include <memory>

#include "nn/layers.h"

namespace quanta::quant {

struct IntegerLinearOptions {
  bool dynamic = false;
  // Dynamic layers: the bits of each batch's unsigned activations, 2 to 8.
  // PyTorch's dynamic Linear quantizes to 7 (linear_dynamic's reduce_range), and
  // CPUs without VNNI then run 8-bit weights whole (Note [Exact integers without
  // VNNI] in backends/cpu/onednn.cc). Static layers take their input quantizer's.
  int dynamic_bits = 8;
};

class IntegerLinear : public nn::Layer {
 public:
  // Throws quanta::Error naming the layer's problem (a static conversion of a
  // layer whose input quantizer has seen no data, ...).
  static std::shared_ptr<IntegerLinear> From(const nn::Linear& linear, const IntegerLinearOptions& options);
  Tensor Forward(const Tensor& x) override;
  int64_t Bytes() const;

  // Fuses GELU and the next layer's input quantization into this one's GEMM
  // epilogue (Note [GELU into the next quantizer]): Forward then returns
  // GELU(x W + b) quantized with (dtype, params). Static layers only.
  void FuseGeluAndQuantize(DType dtype, const QuantParams& params);
  // x quantized as this layer's input (static layers): layers that share an
  // input and its parameters (BERT's query, key and value) quantize it once and
  // pass the result to each Forward.
  Tensor QuantizeInput(const Tensor& x) const;
  bool SameInputAs(const IntegerLinear& other) const;

  Tensor weight;       // (in, out) qint8 or qint4, per output column (axis 1), zero points 0
  Tensor bias;         // (out) f32 or undefined
  bool dynamic = false;
  int dynamic_bits = 8;  // IntegerLinearOptions::dynamic_bits
  DType input_dtype = DType::kQUInt8;  // static layers: quint8 (a signed range shifted to [0, qmax - qmin])
  QuantParams input_params;  // static: per tensor
  bool gelu = false;         // FuseGeluAndQuantize was called
  DType output_dtype = DType::kF32;
  QuantParams output_params;
};

// An Embedding as int8 rows: row r is scale[r] * table[r], the values the
// embedding's fake quantizer gives (or per-row max-abs 8-bit when the layer was
// never prepared). Forward gathers int8 rows, then dequantizes them: the same
// floats as the fake-quantized table, without quantizing the table each call.
class IntegerEmbedding : public nn::Layer {
 public:
  static std::shared_ptr<IntegerEmbedding> From(const nn::Embedding& embedding);
  Tensor Forward(const Tensor& indices) override;  // integer (...) -> f32 (..., dim)
  int64_t Bytes() const { return table.numel() + 4 * scale.numel(); }

  Tensor table;  // (num, dim) i8
  Tensor scale;  // (num, 1) f32
};

}  // namespace quanta::quant
