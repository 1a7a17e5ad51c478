// ResNet in the ImageNet layout (He et al. 2016; torchvision's names and its
// v1.5 bottleneck, stride on the 3x3): ResNet-18/34 (basic blocks) and ResNet-50
// (bottlenecks), with a CIFAR stem option (3x3 stem, no max pool), and
// fmnist_resnet8, the small model of the Fashion-MNIST table. Shortcuts across a
// change of shape are 1x1 convolutions with batch norm ("downsample"). For the
// CIFAR paper's ResNet-20/32/56 see models/resnet_cifar.h.
//
//   Generator gen(0);
//   auto net = ResNet::Make("resnet50", /*num_classes=*/1000, &gen);   // 25,557,032 parameters
//   Tensor logits = net->Forward(images);                               // (N, 3, 224, 224)
//   auto small = ResNet::Make("fmnist_resnet8", 10, &gen);              // (N, 1, 28, 28)
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nn/layers.h"
#include "quant/convert.h"

namespace quanta::models {

struct ResNetConfig {
  bool bottleneck = false;
  std::vector<int> blocks;              // per stage
  std::vector<int64_t> widths;          // per stage (bottlenecks output 4x)
  int64_t in_channels = 3, stem_channels = 64;
  bool cifar_stem = false;              // 3x3 stride-1 stem, no max pool
  int64_t num_classes = 1000;
};

// Basic: conv3x3-BN-ReLU-conv3x3-BN; bottleneck: conv1x1-BN-ReLU-conv3x3-BN-ReLU-
// conv1x1-BN; plus the shortcut (identity or downsample), then ReLU.
class ResNetBlock : public nn::Layer {
 public:
  ResNetBlock(bool bottleneck, int64_t in_channels, int64_t width, int64_t stride, Generator* gen);
  Tensor Forward(const Tensor& x) override;
  std::vector<std::shared_ptr<nn::Conv2d>> convs;        // conv1, conv2 (, conv3)
  std::vector<std::shared_ptr<nn::BatchNorm2d>> bns;     // bn1, bn2 (, bn3)
  std::shared_ptr<nn::Conv2d> downsample_conv;           // "downsample.0", or null
  std::shared_ptr<nn::BatchNorm2d> downsample_bn;        // "downsample.1"
  int64_t out_channels;
};

class ResNet : public nn::Layer, public quant::Convertible {
 public:
  // "resnet18", "resnet34", "resnet50", "fmnist_resnet8"; cifar_stem for the first three.
  static std::shared_ptr<ResNet> Make(const std::string& name, int64_t num_classes, Generator* gen = nullptr,
                                      bool cifar_stem = false);
  ResNet(const ResNetConfig& config, Generator* gen);
  Tensor Forward(const Tensor& x) override;
  void ConvertTo(quant::IntegerBuilder& b) const override;

  ResNetConfig config;
  std::shared_ptr<nn::Conv2d> conv1;
  std::shared_ptr<nn::BatchNorm2d> bn1;
  std::vector<std::pair<std::string, std::shared_ptr<ResNetBlock>>> blocks;  // "layer1.0", ...
  std::shared_ptr<nn::Linear> fc;
};

}  // namespace quanta::models
