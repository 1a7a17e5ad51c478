// Batch norm folded into the convolution for training and deployment.
#include "quant/conv_bn.h"

#include "core/error.h"
#include "core/grad_mode.h"

namespace quanta::quant {

ConvBn2d::ConvBn2d(std::shared_ptr<nn::Conv2d> c, std::shared_ptr<nn::BatchNorm2d> b, int64_t freeze)
    : conv(std::move(c)), bn(std::move(b)), freeze_bn_after(freeze) {
  QUANTA_CHECK(conv && bn && conv->weight.size(0) == bn->running_mean.numel() && bn->weight.defined(),
               "ConvBn2d: the batch norm must be affine and have one channel per convolution output");
  RegisterModule("conv", conv);
  RegisterModule("bn", bn);
}

std::pair<Tensor, Tensor> ConvBn2d::FoldedWeightAndBias() const {
  Tensor sigma = Sqrt(Add(bn->running_var, bn->eps));
  Tensor factor = Div(bn->weight, sigma);  // gamma / sigma, per output channel
  Tensor w = Mul(conv->weight, factor.View({-1, 1, 1, 1}));
  Tensor bias = conv->bias.defined() ? conv->bias : ZerosLike(bn->running_mean);
  Tensor b = Add(bn->bias, Mul(Sub(bias, bn->running_mean), factor));
  return {w, b};
}

Tensor ConvBn2d::Forward(const Tensor& x_in) {
  // The quantization slots: conv's input quantizer; the weight quantizer on the
  // folded weight is ours, or conv's when we have none (PrepareQat fills conv's).
  Tensor x = conv->input_quant ? conv->input_quant->Forward(x_in) : x_in;
  const std::shared_ptr<nn::Layer>& wq = weight_quant ? weight_quant : conv->weight_quant;
  auto quantize = [&](const Tensor& w) { return wq ? wq->Forward(w) : w; };
  if (!is_training()) {
    auto [w, b] = FoldedWeightAndBias();
    return Conv2d(x, quantize(w), b, conv->options);
  }
  ++steps;
  bool frozen = freeze_bn_after >= 0 && steps > freeze_bn_after;
  Tensor factor = Div(bn->weight, Sqrt(Add(bn->running_var, bn->eps)));
  Tensor y = Conv2d(x, quantize(Mul(conv->weight, factor.View({-1, 1, 1, 1}))), Tensor(), conv->options);
  y = Div(y, factor.View({1, -1, 1, 1}));  // back to what conv(x, w) gives, quantization included
  if (conv->bias.defined()) y = Add(y, conv->bias.View({1, -1, 1, 1}));
  return BatchNorm(y, bn->running_mean, bn->running_var, bn->weight, bn->bias, /*training=*/!frozen, bn->momentum,
                   bn->eps);
}

}  // namespace quanta::quant
