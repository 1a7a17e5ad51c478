// IntegerModel: what a converted network runs — integer weights and a program of
// nodes, kept as data so that one safetensors file holds all of it and loads
// with no model code and no training path. Not a general graph runtime: the
// node kinds are the ones CNN and MLP inference needs (quant/convert.h builds
// them from a prepared model; quant/onnx_export.h writes them as ONNX QDQ).
//
//   auto net = quant::Convert(*model);               // after QAT or Calibrate
//   Tensor logits = net->Forward(images);            // f32 in, f32 logits out
//   QUANTA_RETURN_IF_ERROR(net->Save("resnet20.int8.safetensors"));
//   auto loaded = quant::IntegerModel::Load("resnet20.int8.safetensors");  // StatusOr
//   std::cout << loaded.value()->Summary();
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/ops.h"
#include "nn/module.h"
#include "nn/safetensors.h"

namespace quanta::quant {

// Note [Integer model values]: every node makes one value. Quantized values are
// per-tensor qint8/quint8 and 4-D ones are channels-last (int8 convolutions read
// them without a layout change); f32 values appear only where a float op needs
// one (the input, global average pooling, a residual from a float shortcut, the
// logits). A layer's output is quantized with the parameters of the input
// quantizer of the layer that reads it, so consecutive integer layers pass
// integers with no dequantize/quantize between them.
enum class NodeKind {
  kInput,          // the model's f32 input
  kQuantize,       // f32 -> quantized, or quantized -> other parameters (requantize)
  kDequantize,     // quantized -> f32
  kConv2d,         // integer convolution, BN folded, fused residual + ReLU
  kLinear,         // integer matmul, fused residual + ReLU
  kMaxPool2d,      // on quantized values (max commutes with quantization)
  kGlobalAvgPool,  // (N, C, H, W) -> f32 (N, C)
  kFlatten,        // from dim 1
  kShortcutPad,    // ResNet option A: x[:, :, ::s, ::s] with zero channels before and after (real values)
};
// Note [Quantized shortcuts]: a shortcut pad's value is the real
// x[:, :, ::s, ::s] between zero channels, and it is read only as a residual.
// Its node says f32 (the ONNX export writes Slice and Pad on the dequantized
// value), but at run time a per-tensor quantized input whose zero point lies in
// its range stays quantized, in its own dtype and parameters, with the zero
// point in the pads: the same real values, a byte an element for the shortcut
// to write and the residual to read, where dequantizing into f32 took one pass
// more and four times the bytes (ResNet-20 int8 at batch 64: about 4% of the
// samples of a 1-thread run, dequantize, fill and copy). The residual's own
// zero point and scale then enter the convolution's epilogue, as for an
// identity shortcut.
const char* NodeKindName(NodeKind kind);

struct IntegerNode {
  NodeKind kind = NodeKind::kInput;
  std::string name;
  std::vector<int> inputs;  // earlier nodes
  // The output: kF32, or qint8/quint8 with out_params (kQuantize, kConv2d, kLinear).
  DType out_dtype = DType::kF32;
  QuantParams out_params;
  // kConv2d: weight (O, C/G, KH, KW) qint8/qint4 per channel along 0; kLinear:
  // weight (K, N) per channel along 1. Zero points 0; bias f32 or undefined.
  // f32 weights make a float layer (ConvertFloat: the folded float baseline),
  // reading and writing f32.
  Tensor weight, bias;
  Conv2dOptions conv;
  Pool2dOptions pool;   // kMaxPool2d
  bool relu = false;
  int residual = -1;    // kConv2d/kLinear: node added before the ReLU, or -1
  int64_t stride = 1, pad_before = 0, pad_after = 0;  // kShortcutPad
  int weight_bits = 0, act_bits = 0;  // what the policy gave the layer (reports)
  // Note [Block-format nodes]: a layer or value in a block format (Note [Block
  // formats in policies] in quant/quantizer.h). kQuantize: the f32 input as
  // BlockFakeQuantizeActivation gives it, an f32 output. kConv2d / kLinear: the weight is stored as
  // weight_blocks (BlockQuantizeWeight of the layer's (O, in * kh * kw) matrix)
  // times weight_factor per output channel (a folded batch norm; undefined: 1),
  // and `weight` holds it decoded once (f32, the node's layout), which the
  // float kernels read; the output may be quantized for an integer consumer.
  std::optional<BlockFormat> block;
  BlockQuantized weight_blocks;
  Tensor weight_factor;
};

// The layer's own weight shape: (O, C, KH, KW) for a convolution, (N, K) for a
// Linear, whose node holds (K, N).
Shape LayerShape(const IntegerNode& n);

// A block-format layer's f32 weight in the node's layout (kConv2d: (O, C, KH,
// KW); kLinear: (K, N)) from its blocks, `layer_shape` being the layer's own
// weight shape ((O, C, KH, KW) or (N, K)) and factor (O) or undefined.
Tensor DecodeBlockWeight(NodeKind kind, const BlockQuantized& blocks, const Tensor& factor, const Shape& layer_shape);

class IntegerModel : public nn::Layer {
 public:
  IntegerModel();  // node 0 is the input
  // Appends a node; returns its index. Checks kinds, inputs and weights.
  int Add(IntegerNode node);
  const std::vector<IntegerNode>& nodes() const { return nodes_; }
  const IntegerNode& node(int i) const { return nodes_.at(i); }
  // The value of the last node for an f32 input on the weights' device.
  Tensor Forward(const Tensor& x) override;
  // Moves the weights and biases (a CUDA device runs the integer layers on int8
  // tensor cores through cuBLASLt).
  void MoveTo(const Device& device);

  // Exact bytes of what the model holds: integer weights at their storage size
  // (qint4: two a byte), biases and per-channel scales in f32; block-format
  // weights as stored (elements, block scales, factors), not their f32 cache.
  int64_t Bytes() const;
  // Multiply-adds of one Forward on an input of this shape: the convolutions'
  // and linear layers' (N * O * C/G * KH * KW * OH * OW; rows * K * N), the
  // work the int8 kernels do; pooling and the rest count none.
  int64_t MultiplyAdds(const Shape& input) const;
  // One line per node: kind, name, bits, output, weight shape.
  std::string Summary() const;

  // One safetensors file: "<node>.weight" (I8, or U8 packed two a byte for
  // qint4), "<node>.weight_scale" (F32), "<node>.bias" (F32), and the program in
  // the metadata ("quanta.graph", one node a line), with `metadata` added.
  // Block-format layers store "<node>.weight_codes" (U8: the packed elements,
  // MXFP4 two a byte), "<node>.weight_scales" (F8_E8M0, F8_E4M3 or F32),
  // "<node>.weight_tensor_scale" (F32) and "<node>.weight_factor" (F32).
  absl::Status Save(const std::string& path, const std::map<std::string, std::string>& metadata = {}) const;
  // Errors name the file and what is wrong (a missing tensor, a bad shape, a
  // node reading a later node, a truncated or corrupt file).
  static absl::StatusOr<std::shared_ptr<IntegerModel>> Load(const std::string& path);
  static absl::StatusOr<std::shared_ptr<IntegerModel>> Parse(std::string_view bytes, std::string_view source);
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  static absl::StatusOr<std::shared_ptr<IntegerModel>> FromSafetensors(absl::StatusOr<Safetensors> file,
                                                                       const std::string& source);
  std::vector<IntegerNode> nodes_;
  std::vector<int> last_use_;  // per node: the last node that reads it
  std::map<std::string, std::string> metadata_;
};

}  // namespace quanta::quant
