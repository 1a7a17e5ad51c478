// Convert: a prepared model (QAT-trained, or calibrated by PTQ) into an
// IntegerModel that computes in integers: int8 (or packed int4) weights with
// per-channel scales, batch norm folded, ReLU and residual adds fused into the
// integer layers, activations passed as int8 from layer to layer (Note [Integer
// model values] in quant/integer_model.h). Not a tracer: Sequential models
// convert generically; a model with its own Forward (a ResNet) says how its
// layers connect by implementing Convertible with an IntegerBuilder.
//
//   PrepareReport r = PrepareQat(*net, policy);  ... train, or Calibrate(r, ...) ...
//   std::shared_ptr<IntegerModel> q = quant::Convert(*net);
//   Tensor logits = q->Forward(images);          // matches net->Forward in eval
//
//   // In a model with its own Forward:
//   void MyNet::ConvertTo(quant::IntegerBuilder& b) const {
//     int h = b.Conv("conv1", *conv1, bn1.get(), b.input(), /*relu=*/true, /*consumer=*/fc.get());
//     b.Linear("fc", *fc, b.Flatten(h), /*relu=*/false, /*consumer=*/nullptr);
//   }
#pragma once

#include <map>
#include <memory>
#include <string>

#include "nn/layers.h"
#include "quant/conv_bn.h"
#include "quant/integer_model.h"

namespace quanta::quant {

// Note [Where activations are quantized]: every value the integer model holds
// as integers is fake-quantized in training at the same place with the same
// parameters. The fake-quant model quantizes each Conv2d/Linear's input with
// that layer's input quantizer; the integer model quantizes the same value with
// the same parameters at the end of the layer that produces it (a layer's
// output parameters are those of its consumer's input quantizer). A value that
// several layers and a residual add read is quantized once and every reader
// uses the quantized value, in training too (Note [One quantized value, several
// readers] in nn/layers.h): the shortcut adds the quantized block input, and a
// downsample reads it with the same quantizer. Where no quantizable layer reads
// a value directly (global average pooling, the logits, a downsample's output
// added in the epilogue) both keep it f32.
//
// Note [Quantization plan]: where values are quantized is written once, in the
// model's integer form (ConvertTo, or a Sequential's chain). PlanSharedInputs
// runs it without weights or quantizers and returns, for each value read by
// more than one layer, the layers that read it; PrepareQat gives each such
// group one input quantizer (the first reader's), and Convert, running the same
// ConvertTo, finds the value already quantized with those parameters.
struct PlannedLayer;

class IntegerBuilder {
 public:
  // kInteger: Convert; kFloat: ConvertFloat's builder (folded f32 layers, no
  // quantizers); kPlan: PlanSharedInputs (records who reads which node).
  enum class Mode { kInteger, kFloat, kPlan };
  explicit IntegerBuilder(Mode mode = Mode::kInteger);
  bool float_weights() const { return mode_ == Mode::kFloat; }
  int input() const { return 0; }
  std::shared_ptr<IntegerModel> model() const { return model_; }

  // Conv2d (a BatchNorm2d after it folded) reading node `in`, ReLU fused when
  // relu, `residual` (a node, or -1) added before the ReLU. The output is
  // quantized for `consumer` (the layer that reads it next), or f32 when null.
  int Conv(const std::string& name, const nn::Conv2d& conv, const nn::BatchNorm2d* bn, int in, bool relu,
           const nn::QuantizableLayer* consumer, int residual = -1);
  // ConvBn2d: its folded weight and bias, quantized with its weight quantizer;
  // the input quantizer is conv's.
  int Conv(const std::string& name, const ConvBn2d& conv_bn, int in, bool relu, const nn::QuantizableLayer* consumer,
           int residual = -1);
  int Linear(const std::string& name, const nn::Linear& linear, int in, bool relu,
             const nn::QuantizableLayer* consumer, int residual = -1);
  int MaxPool(int in, const Pool2dOptions& options);
  int GlobalAvgPool(int in);  // -> f32 (N, C)
  int Flatten(int in);
  int ShortcutPad(int in, int64_t stride, int64_t pad_before, int64_t pad_after);
  int Dequantize(int in);  // no-op for an f32 node

 private:
  // Node `in` as `layer`'s input quantizer would quantize it (a quantize or
  // requantize node when it is not already so).
  int QuantizedInput(int in, const nn::QuantizableLayer& layer, const std::string& name);
  int AddWeighted(IntegerNode node, const nn::QuantizableLayer& layer, int in, const nn::QuantizableLayer* consumer);
  // kPlan: a placeholder node for a layer reading `in`, and the layer's row.
  int PlanRead(const nn::QuantizableLayer& layer, const std::string& name, int in, const nn::BatchNorm2d* bn,
               bool relu, bool residual, bool folded_in_training = false);
  std::shared_ptr<IntegerModel> model_;
  Mode mode_;
  std::vector<std::vector<const nn::QuantizableLayer*>> readers_;  // kPlan: per node
  std::map<int, int> block_quantized_;  // node -> its block-format quantize node (Note [Block-format nodes])
  struct PlanRow {
    std::string name;
    const nn::QuantizableLayer* layer;
    const nn::BatchNorm2d* bn;
    bool relu, residual, folded_in_training;
  };
  std::vector<PlanRow> plan_;  // kPlan: every weighted layer in order

  friend std::vector<std::vector<nn::QuantizableLayer*>> PlanSharedInputs(nn::Module& model);
  friend std::vector<PlannedLayer> PlanLayers(nn::Module& model);

// The weight of a Conv2d or Linear.
Tensor& WeightOf(nn::QuantizableLayer* layer);
};

// Models whose Forward is code, not a Sequential, implement this.
class Convertible {
 public:
  virtual ~Convertible() = default;
  virtual void ConvertTo(IntegerBuilder& builder) const = 0;
};

// The groups of layers that read one value, for each value more than one
// Conv2d/Linear reads, in the integer program's order (Note [Quantization
// plan]); empty for a model that is neither Sequential nor Convertible, or
// that has no integer form.
std::vector<std::vector<nn::QuantizableLayer*>> PlanSharedInputs(nn::Module& model);

// Every Conv2d/Linear of the integer program in the order it runs them, with
// what the same integer layer does after the product: a folded batch norm, a
// fused ReLU, a residual add (before the ReLU). Empty as for PlanSharedInputs.
// PTQ's reconstruction (quant/adaround.h) reconstructs each layer's output so.
struct PlannedLayer {
  std::string name;
  nn::QuantizableLayer* layer;
  nn::BatchNorm2d* bn;      // or null
  bool relu, residual;
  bool folded_in_training;  // a ConvBn2d: its weight quantizer sees the folded weight
};
std::vector<PlannedLayer> PlanLayers(nn::Module& model);

// The weight of a Conv2d or Linear.
Tensor& WeightOf(nn::QuantizableLayer* layer);

// Throws quanta::Error naming the layer when a quantizer is missing, disabled or
// has not seen data, or a layer has no integer form.
std::shared_ptr<IntegerModel> Convert(nn::Module& model);
// The same program in f32: batch norm folded into the weights, no quantization,
// no quantizers needed. The float baseline a converted model is measured
// against (what deploying the float model well looks like), and a faster f32
// inference model in its own right.
std::shared_ptr<IntegerModel> ConvertFloat(nn::Module& model);

}  // namespace quanta::quant
