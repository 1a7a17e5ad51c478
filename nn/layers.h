// The layers (namespace quanta::nn, as torch.nn): parameters and buffers registered under PyTorch's names, math in
// nn/functional.h. Initialization follows PyTorch's defaults from a generator.
//
//   Generator gen(0);
//   auto net = std::make_shared<Sequential>(
//       std::make_shared<Conv2d>(3, 16, 3, Conv2dOptions{.padding = {1, 1}}, false, &gen),
//       std::make_shared<BatchNorm2d>(16), std::make_shared<ReLU>(),
//       std::make_shared<AdaptiveAvgPool2d>(1, 1), std::make_shared<Flatten>(),
//       std::make_shared<Linear>(16, 10, true, &gen));
//   Tensor logits = net->Forward(images);
#pragma once

#include <functional>
#include <memory>

#include "core/generator.h"
#include "nn/functional.h"
#include "nn/module.h"

namespace quanta::nn {

// Note [Quantization slots]: Linear and Conv2d carry two optional layers that
// quant::PrepareQat fills: input_quant runs on the input, weight_quant on the
// weight, before the matmul or convolution. Attaching (rather than swapping the
// layer) keeps parameter names and the typed members models hold.
//
// Note [One quantized value, several readers]: a value that several layers read
// (a residual block's input: conv1, the downsample and the shortcut add) is
// quantized once, by the first reader's input quantizer, and every reader uses
// that one quantized value, as the integer model does. PrepareQat shares the
// quantizer (ShareInputQuantizer: the other readers point to it without owning
// it, so its state is saved once, under the owner's name); the model's Forward
// calls QuantizeInput once and ForwardQuantized on each reader.
class QuantizableLayer : public Layer {
 public:
  void AttachQuantizers(std::shared_ptr<Layer> input, std::shared_ptr<Layer> weight);
  // Reads the value `owner` quantizes (Note [One quantized value, several readers]).
  void ShareInputQuantizer(const QuantizableLayer& owner);
  bool owns_input_quant() const { return owns_input_; }
  Tensor Forward(const Tensor& x) override { return ForwardQuantized(QuantizeInput(x)); }
  // The input as this layer's input quantizer quantizes it (x when it has none).
  Tensor QuantizeInput(const Tensor& x) { return input_quant ? input_quant->Forward(x) : x; }
  // The layer on an input QuantizeInput already produced.
  virtual Tensor ForwardQuantized(const Tensor& x) = 0;
  std::shared_ptr<Layer> input_quant, weight_quant;
  // When set, sees every input ForwardQuantized receives, after quantization
  // (PyTorch's forward pre-hook; quant::AdaRound collects a layer's inputs so).
  std::function<void(const Tensor&)> input_hook;
  // When set, replaces the gradient that reaches the layer's output before the
  // layer's own backward uses it (FP8 training quantizes it: quant/fp8.h).
  std::function<Tensor(const Tensor&)> output_grad_quant;

 protected:
  Tensor QuantizedWeight(const Tensor& w) { return weight_quant ? weight_quant->Forward(w) : w; }
  // y, with output_grad_quant hooked on its gradient.
  Tensor QuantizeOutputGrad(Tensor y);

 private:
  bool owns_input_ = true;
};

class Linear : public QuantizableLayer {
 public:
  Linear(int64_t in_features, int64_t out_features, bool bias = true, Generator* gen = nullptr);
  Tensor ForwardQuantized(const Tensor& x) override;
  Tensor weight;  // (out, in)
  Tensor bias;    // (out) or undefined
};

class Conv2d : public QuantizableLayer {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size,
         const Conv2dOptions& options = {}, bool bias = true, Generator* gen = nullptr);
  Tensor ForwardQuantized(const Tensor& x) override;
  Conv2dOptions options;
  Tensor weight;  // (out, in / groups, k, k)
  Tensor bias;    // (out) or undefined
};

class BatchNorm2d : public Layer {
 public:
  explicit BatchNorm2d(int64_t channels, double eps = 1e-5, double momentum = 0.1, bool affine = true);
  Tensor Forward(const Tensor& x) override;
  // relu(bn(x) + residual), the parts the epilogue sets, in batch norm's own
  // pass where the backend fuses it (nn::BatchNorm).
  Tensor Forward(const Tensor& x, const BatchNormEpilogue& epilogue);
  double eps, momentum;
  Tensor weight, bias;                 // (C), when affine
  Tensor running_mean, running_var;    // (C) buffers
  Tensor num_batches_tracked;          // i64 scalar buffer
  // Synchronized statistics (dist::SyncBatchNorm sets it): in training, called
  // with this process's per-channel (mean, M2 = sum of squared deviations, count)
  // as (3, C) and returning the global batch's (mean, biased variance, count),
  // differentiably; the layer then normalizes with those. Unset: local statistics.
  std::function<Tensor(const Tensor&)> sync_stats;

 private:
  Tensor SyncedForward(const Tensor& x);
};

class LayerNorm : public Layer {
 public:
  explicit LayerNorm(Shape normalized_shape, double eps = 1e-5, bool affine = true);
  Tensor Forward(const Tensor& x) override;
  Shape normalized_shape;
  double eps;
  Tensor weight, bias;
};

// A QuantizableLayer for its weight slot only (quant::PrepareQat gives the
// table 8-bit per-row fake quantization; the indices are never quantized).
class Embedding : public QuantizableLayer {
 public:
  Embedding(int64_t num_embeddings, int64_t dim, Generator* gen = nullptr);
  Tensor Forward(const Tensor& indices) override;
  Tensor ForwardQuantized(const Tensor& indices) override { return Forward(indices); }  // indices are never quantized
  Tensor weight;  // (num, dim)
};

class Dropout : public Layer {
 public:
  explicit Dropout(double p = 0.5, Generator* gen = nullptr) : p(p), gen(gen) {}
  Tensor Forward(const Tensor& x) override { return quanta::Dropout(x, p, is_training(), gen); }
  double p;
  Generator* gen;
};

class ReLU : public Layer {
 public:
  Tensor Forward(const Tensor& x) override { return Relu(x); }
};

class GELU : public Layer {
 public:
  Tensor Forward(const Tensor& x) override { return Gelu(x); }
};

class Identity : public Layer {
 public:
  Tensor Forward(const Tensor& x) override { return x; }
};

class Flatten : public Layer {
 public:
  explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1) : start_dim(start_dim), end_dim(end_dim) {}
  Tensor Forward(const Tensor& x) override { return x.Flatten(start_dim, end_dim); }
  int64_t start_dim, end_dim;
};

class MaxPool2d : public Layer {
 public:
  explicit MaxPool2d(const Pool2dOptions& options) : options(options) {}
  Tensor Forward(const Tensor& x) override { return quanta::MaxPool2d(x, options); }
  Pool2dOptions options;
};

class AvgPool2d : public Layer {
 public:
  explicit AvgPool2d(const Pool2dOptions& options) : options(options) {}
  Tensor Forward(const Tensor& x) override { return quanta::AvgPool2d(x, options); }
  Pool2dOptions options;
};

class AdaptiveAvgPool2d : public Layer {
 public:
  AdaptiveAvgPool2d(int64_t out_h, int64_t out_w) : out_h(out_h), out_w(out_w) {}
  Tensor Forward(const Tensor& x) override { return quanta::AdaptiveAvgPool2d(x, out_h, out_w); }
  int64_t out_h, out_w;
};

// Batched multi-head attention (batch first: (B, T, E)), PyTorch's parameter
// names: in_proj_weight (3E, E), in_proj_bias (3E), out_proj.{weight,bias}.
class MultiheadAttention : public Module {
 public:
  MultiheadAttention(int64_t embed_dim, int64_t num_heads, double dropout = 0, Generator* gen = nullptr);
  struct Masks {
    Tensor key_padding;  // bool (B, S): true where the key is padding
    Tensor attn;         // bool (T, S) true where masked, or float additive
    bool causal = false; // mask keys after the query position (needs T == S)
  };
  Tensor Forward(const Tensor& query, const Tensor& key, const Tensor& value, const Masks& masks);
  Tensor Forward(const Tensor& x) { return Forward(x, x, x, {}); }
  int64_t embed_dim, num_heads;
  double dropout;
  Generator* gen;
  Tensor in_proj_weight, in_proj_bias;
  std::shared_ptr<Linear> out_proj;
};

}  // namespace quanta::nn
