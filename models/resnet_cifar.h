// ResNet for CIFAR (He et al. 2016, section 4.2): a 3x3 stem of 16 channels,
// three stages of n BasicBlocks at 16, 32 and 64 channels (depth 6n + 2: ResNet-20,
// 32, 56, ...), global average pooling and a linear classifier. Shortcuts across a
// change of shape are the paper's option A: stride-2 subsampling and zero-padded
// channels, so they hold no parameters (ResNet-20 has 0.27M).
//
//   Generator gen(0);
//   auto net = CifarResNet::Make(20, /*num_classes=*/100, &gen);
//   Tensor logits = net->Forward(images);   // images (N, 3, 32, 32)
//   auto int8 = quant::Convert(*net);        // after PrepareQat and training or Calibrate
#pragma once

#include <memory>

#include "nn/layers.h"
#include "quant/convert.h"

namespace quanta::models {

// conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU.
class BasicBlock : public nn::Layer {
 public:
  BasicBlock(int64_t in_channels, int64_t out_channels, int64_t stride, Generator* gen);
  Tensor Forward(const Tensor& x) override;
  std::shared_ptr<nn::Conv2d> conv1, conv2;
  std::shared_ptr<nn::BatchNorm2d> bn1, bn2;
  int64_t in_channels, out_channels, stride;
};

class CifarResNet : public nn::Layer, public quant::Convertible {
 public:
  // depth = 6n + 2 (20, 32, 44, 56, 110).
  static std::shared_ptr<CifarResNet> Make(int depth, int64_t num_classes, Generator* gen = nullptr);
  CifarResNet(int blocks_per_stage, int64_t num_classes, Generator* gen);
  Tensor Forward(const Tensor& x) override;
  // The integer form (quant/convert.h): each block's conv2 adds the shortcut and
  // applies the ReLU in its epilogue.
  void ConvertTo(quant::IntegerBuilder& b) const override;
  std::shared_ptr<nn::Conv2d> conv1;
  std::shared_ptr<nn::BatchNorm2d> bn1;
  std::shared_ptr<nn::Sequential> layer1, layer2, layer3;
  std::shared_ptr<nn::Linear> fc;
};

}  // namespace quanta::models
