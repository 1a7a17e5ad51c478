// ConvBn2d: convolution followed by batch norm, trained the way the deployed
// model will run, with batch norm folded into the weights (Krishnamoorthi 2018,
// section 3.2; PyTorch's ConvBn2d). In training the weights are scaled by
// gamma / sigma_running and fake-quantized, the convolution's output is scaled
// back, and batch norm then normalizes with the batch statistics; after
// freeze_bn_after steps it uses the running statistics. In eval it is exactly
// the folded convolution: conv(x, fq(w gamma / sigma)) + beta - gamma mu / sigma.
//
//   auto cb = std::make_shared<ConvBn2d>(conv, bn, /*freeze_bn_after=*/20000);
//   cb->weight_quant = std::make_shared<FakeQuant>(QuantSpec{.bits = 4, .per_channel = true});
//   Tensor y = Relu(cb->Forward(x));
#pragma once

#include <memory>

#include "nn/layers.h"
#include "quant/quantizer.h"

namespace quanta::quant {

class ConvBn2d : public nn::Layer {
 public:
  ConvBn2d(std::shared_ptr<nn::Conv2d> conv, std::shared_ptr<nn::BatchNorm2d> bn, int64_t freeze_bn_after = -1);
  Tensor Forward(const Tensor& x) override;
  // The folded weight and bias a deployed model uses (no fake quantization).
  std::pair<Tensor, Tensor> FoldedWeightAndBias() const;

  std::shared_ptr<nn::Conv2d> conv;
  std::shared_ptr<nn::BatchNorm2d> bn;
  std::shared_ptr<nn::Layer> weight_quant;  // optional (else conv->weight_quant); set before training
  int64_t freeze_bn_after;                  // -1: never
  int64_t steps = 0;
};

}  // namespace quanta::quant
