// Layer constructors (registration, PyTorch's default initialization) and forwards.
#include "nn/layers.h"

#include <algorithm>
#include <cmath>

#include "autograd/autograd.h"
#include "core/error.h"
#include "core/grad_mode.h"
#include "nn/init.h"

namespace quanta::nn {

Linear::Linear(int64_t in_features, int64_t out_features, bool with_bias, Generator* gen) {
  weight = Tensor::Empty({out_features, in_features});
  KaimingUniform(weight, gen, std::sqrt(5.0));  // PyTorch's default: U(-1/sqrt(in), 1/sqrt(in))
  RegisterParameter("weight", &weight);
  if (with_bias) {
    bias = Tensor::Empty({out_features});
    double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
    UniformInit(bias, -bound, bound, gen);
    RegisterParameter("bias", &bias);
  }
}

void QuantizableLayer::AttachQuantizers(std::shared_ptr<Layer> input, std::shared_ptr<Layer> weight) {
  QUANTA_CHECK(!input_quant && !weight_quant, "AttachQuantizers: the layer already has quantizers");
  if (input) input_quant = RegisterModule("input_quant", std::move(input));
  if (weight) weight_quant = RegisterModule("weight_quant", std::move(weight));
}

void QuantizableLayer::ShareInputQuantizer(const QuantizableLayer& owner) {
  QUANTA_CHECK(!input_quant, "ShareInputQuantizer: the layer already has an input quantizer");
  QUANTA_CHECK(owner.input_quant, "ShareInputQuantizer: the owner has no input quantizer");
  input_quant = owner.input_quant;  // not registered: saved and moved with the owner
  owns_input_ = false;
}

Tensor QuantizableLayer::QuantizeOutputGrad(Tensor y) {
  if (output_grad_quant && y.requires_grad()) RegisterHook(y, output_grad_quant);
  return y;
}

Tensor Linear::ForwardQuantized(const Tensor& x) {
  if (input_hook) input_hook(x);
  return QuantizeOutputGrad(quanta::Linear(x, QuantizedWeight(weight), bias));
}

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, const Conv2dOptions& o,
               bool with_bias, Generator* gen)
    : options(o) {
  QUANTA_CHECK(o.groups >= 1 && in_channels % o.groups == 0 && out_channels % o.groups == 0,
               "Conv2d: channels ", in_channels, " -> ", out_channels, " do not divide into ", o.groups, " groups");
  weight = Tensor::Empty({out_channels, in_channels / o.groups, kernel_size, kernel_size});
  KaimingUniform(weight, gen, std::sqrt(5.0));
  RegisterParameter("weight", &weight);
  if (with_bias) {
    bias = Tensor::Empty({out_channels});
    double bound = 1.0 / std::sqrt(static_cast<double>(FanInOut(weight).first));
    UniformInit(bias, -bound, bound, gen);
    RegisterParameter("bias", &bias);
  }
}

Tensor Conv2d::ForwardQuantized(const Tensor& x) {
  if (input_hook) input_hook(x);
  return QuantizeOutputGrad(quanta::Conv2d(x, QuantizedWeight(weight), bias, options));
}

BatchNorm2d::BatchNorm2d(int64_t channels, double eps, double momentum, bool affine)
    : eps(eps), momentum(momentum) {
  if (affine) {
    weight = Ones({channels});
    bias = Zeros({channels});
    RegisterParameter("weight", &weight);
    RegisterParameter("bias", &bias);
  }
  running_mean = Zeros({channels});
  running_var = Ones({channels});
  num_batches_tracked = Zeros({}, DType::kI64);
  RegisterBuffer("running_mean", &running_mean);
  RegisterBuffer("running_var", &running_var);
  RegisterBuffer("num_batches_tracked", &num_batches_tracked);
}

Tensor BatchNorm2d::Forward(const Tensor& x) { return Forward(x, {}); }

Tensor BatchNorm2d::Forward(const Tensor& x, const BatchNormEpilogue& epilogue) {
  if (is_training()) {
    NoGradGuard no_grad;
    num_batches_tracked.CopyFrom(Add(num_batches_tracked, Scalar(1, DType::kI64, num_batches_tracked.device())));
  }
  if (is_training() && sync_stats) return ApplyEpilogue(SyncedForward(x), epilogue);
  return quanta::BatchNorm(x, running_mean, running_var, weight, bias, is_training(), momentum, eps, epilogue);
}

// Note [Synchronized statistics] in dist/ddp.cc says how the global statistics
// are combined; here, the local ones and the normalization with the result.
Tensor BatchNorm2d::SyncedForward(const Tensor& x) {
  QUANTA_CHECK(x.dim() == 4 && x.size(1) == running_mean.numel(), "batch_norm (synchronized): input ", x.Describe(),
               " for ", running_mean.numel(), " channels");
  const int64_t C = x.size(1), n = x.numel() / C;
  const Shape channel = {1, C, 1, 1};
  Tensor mean = Mean(x, {0, 2, 3});
  Tensor centered = Sub(x, mean.View(channel));
  Tensor m2 = Sum(Mul(centered, centered), {0, 2, 3});
  Tensor global = sync_stats(Stack({mean, m2, Full({C}, static_cast<double>(n), x.dtype(), x.device())}, 0));
  QUANTA_CHECK(global.dim() == 2 && global.size(0) == 3 && global.size(1) == C, "batch_norm (synchronized): sync_stats returned ",
               global.Describe(), ", expected (3, ", C, ")");
  Tensor g_mean = global.Select(0, 0), g_var = global.Select(0, 1);
  UpdateBatchNormRunning(g_mean, g_var, global.Select(0, 2).Select(0, 0).item<float>(), running_mean, running_var,
                         momentum);
  Tensor y = Mul(Sub(x, g_mean.View(channel)), Rsqrt(Add(g_var, eps)).View(channel));
  if (weight.defined()) y = Mul(y, weight.View(channel));
  if (bias.defined()) y = Add(y, bias.View(channel));
  return y;
}

LayerNorm::LayerNorm(Shape shape, double eps, bool affine) : normalized_shape(std::move(shape)), eps(eps) {
  if (affine) {
    weight = Ones(normalized_shape);
    bias = Zeros(normalized_shape);
    RegisterParameter("weight", &weight);
    RegisterParameter("bias", &bias);
  }
}

Tensor LayerNorm::Forward(const Tensor& x) { return quanta::LayerNorm(x, normalized_shape, weight, bias, eps); }

Embedding::Embedding(int64_t num_embeddings, int64_t dim, Generator* gen) {
  weight = Tensor::Empty({num_embeddings, dim});
  NormalInit(weight, 0, 1, gen);
  RegisterParameter("weight", &weight);
}

Tensor Embedding::Forward(const Tensor& indices) { return quanta::Embedding(indices, QuantizedWeight(weight)); }

MultiheadAttention::MultiheadAttention(int64_t embed_dim, int64_t num_heads, double dropout, Generator* gen)
    : embed_dim(embed_dim), num_heads(num_heads), dropout(dropout), gen(gen) {
  QUANTA_CHECK(num_heads >= 1 && embed_dim % num_heads == 0, "MultiheadAttention: embed_dim ", embed_dim,
               " is not divisible by num_heads ", num_heads);
  in_proj_weight = Tensor::Empty({3 * embed_dim, embed_dim});
  XavierUniform(in_proj_weight, gen);
  in_proj_bias = Zeros({3 * embed_dim});
  RegisterParameter("in_proj_weight", &in_proj_weight);
  RegisterParameter("in_proj_bias", &in_proj_bias);
  out_proj = RegisterModule("out_proj", std::make_shared<Linear>(embed_dim, embed_dim, true, gen));
  ConstantInit(out_proj->bias, 0);
}

Tensor MultiheadAttention::Forward(const Tensor& query, const Tensor& key, const Tensor& value,
                                   const Masks& masks) {
  QUANTA_CHECK(query.dim() == 3 && key.dim() == 3 && value.dim() == 3 && query.size(2) == embed_dim &&
                   key.size(2) == embed_dim && value.size(2) == embed_dim && key.size(1) == value.size(1) &&
                   query.size(0) == key.size(0) && key.size(0) == value.size(0),
               "MultiheadAttention: expected (B, T, ", embed_dim, ") inputs, got ", query.Describe(), ", ",
               key.Describe(), ", ", value.Describe());
  int64_t B = query.size(0), T = query.size(1), S = key.size(1), H = num_heads, D = embed_dim / H;
  auto project = [&](const Tensor& x, int64_t part, int64_t L) {
    Tensor w = in_proj_weight.Narrow(0, part * embed_dim, embed_dim);
    Tensor b = in_proj_bias.Narrow(0, part * embed_dim, embed_dim);
    return quanta::Linear(x, w, b).View({B, L, H, D}).Transpose(1, 2);  // (B, H, L, D)
  };
  Tensor q = project(query, 0, T), k = project(key, 1, S), v = project(value, 2, S);
  // One additive mask (B or 1, 1, T, S): -inf where a key may not be attended.
  Tensor mask = Zeros({1, 1, T, S}, query.dtype(), query.device());
  auto add_blocked = [&](const Tensor& blocked) {  // bool, broadcastable to (B, 1, T, S)
    mask = Add(mask, Where(blocked, Scalar(-INFINITY, query.dtype(), query.device()),
                           Scalar(0, query.dtype(), query.device())));
  };
  if (masks.causal) {
    QUANTA_CHECK(T == S, "MultiheadAttention: a causal mask needs as many queries as keys (", T, " vs ", S, ")");
    add_blocked(Gt(Arange(0, S).View({1, S}), Arange(0, T).View({T, 1})).View({1, 1, T, S}));
  }
  if (masks.attn.defined()) {
    QUANTA_CHECK(masks.attn.shape() == (Shape{T, S}), "MultiheadAttention: attn mask must be (T, S) = (", T,
                 ", ", S, "), got ", masks.attn.Describe());
    if (masks.attn.dtype() == DType::kBool) {
      add_blocked(masks.attn.View({1, 1, T, S}));
    } else {
      mask = Add(mask, masks.attn.To(query.dtype()).View({1, 1, T, S}));
    }
  }
  if (masks.key_padding.defined()) {
    QUANTA_CHECK(masks.key_padding.shape() == (Shape{B, S}) && masks.key_padding.dtype() == DType::kBool,
                 "MultiheadAttention: key_padding mask must be bool (B, S) = (", B, ", ", S, "), got ",
                 masks.key_padding.Describe());
    add_blocked(masks.key_padding.View({B, 1, 1, S}));
  }
  Tensor scores = Add(Mul(Matmul(q, k.Transpose(-2, -1)), 1.0 / std::sqrt(static_cast<double>(D))), mask);
  Tensor attn = quanta::Dropout(Softmax(scores, -1), dropout, is_training(), gen);
  Tensor out = Matmul(attn, v).Transpose(1, 2).Reshape({B, T, embed_dim});
  return out_proj->Forward(out);
}

}  // namespace quanta::nn
