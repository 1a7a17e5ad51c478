// ImageNet-layout ResNets: construction (torchvision's names, Kaiming init),
// forward, and the integer form.
#include "models/resnet.h"

#include "core/error.h"
#include "nn/init.h"

namespace quanta::models {
namespace {

std::shared_ptr<nn::Conv2d> MakeConv(int64_t in, int64_t out, int64_t k, int64_t stride, Generator* gen) {
  Conv2dOptions o;
  o.stride[0] = o.stride[1] = stride;
  o.padding[0] = o.padding[1] = k / 2;
  auto conv = std::make_shared<nn::Conv2d>(in, out, k, o, /*bias=*/false, gen);
  nn::KaimingNormal(conv->weight, gen, 0, nn::FanMode::kFanOut);
  return conv;
}

}  // namespace

ResNetBlock::ResNetBlock(bool bottleneck, int64_t in, int64_t width, int64_t stride, Generator* gen) {
  out_channels = bottleneck ? 4 * width : width;
  std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>> shapes;  // in, out, kernel, stride
  if (bottleneck) {
    shapes = {{in, width, 1, 1}, {width, width, 3, stride}, {width, out_channels, 1, 1}};
  } else {
    shapes = {{in, width, 3, stride}, {width, width, 3, 1}};
  }
  for (size_t i = 0; i < shapes.size(); ++i) {
    auto [ci, co, k, s] = shapes[i];
    convs.push_back(RegisterModule("conv" + std::to_string(i + 1), MakeConv(ci, co, k, s, gen)));
    bns.push_back(RegisterModule("bn" + std::to_string(i + 1), std::make_shared<nn::BatchNorm2d>(co)));
  }
  if (stride != 1 || in != out_channels) {
    auto ds = std::make_shared<nn::Sequential>();
    downsample_conv = MakeConv(in, out_channels, 1, stride, gen);
    downsample_bn = std::make_shared<nn::BatchNorm2d>(out_channels);
    ds->Append(downsample_conv);
    ds->Append(downsample_bn);
    RegisterModule("downsample", ds);
  }
}

Tensor ResNetBlock::Forward(const Tensor& x_in) {
  // conv1, the downsample and the shortcut read the block input as conv1
  // quantizes it, the value the integer model holds (Note [One quantized value,
  // several readers] in nn/layers.h).
  Tensor x = convs[0]->QuantizeInput(x_in);
  Tensor shortcut = x;
  if (downsample_conv) {
    Tensor ds = downsample_conv->owns_input_quant() ? downsample_conv->Forward(x_in) : downsample_conv->ForwardQuantized(x);
    shortcut = downsample_bn->Forward(ds);
  }
  // Each ReLU and the residual add run inside batch norm's pass (nn::BatchNorm's
  // epilogue).
  Tensor y = x;
  for (size_t i = 0; i < convs.size(); ++i) {
    Tensor z = i == 0 ? convs[0]->ForwardQuantized(x) : convs[i]->Forward(y);
    const bool last = i + 1 == convs.size();
    y = bns[i]->Forward(z, {.residual = last ? shortcut : Tensor(), .relu = true});
  }
  return y;
}

std::shared_ptr<ResNet> ResNet::Make(const std::string& name, int64_t num_classes, Generator* gen, bool cifar_stem) {
  ResNetConfig c;
  c.num_classes = num_classes;
  c.cifar_stem = cifar_stem;
  c.widths = {64, 128, 256, 512};
  if (name == "resnet18") {
    c.blocks = {2, 2, 2, 2};
  } else if (name == "resnet34") {
    c.blocks = {3, 4, 6, 3};
  } else if (name == "resnet50") {
    c.blocks = {3, 4, 6, 3};
    c.bottleneck = true;
  } else if (name == "fmnist_resnet8") {
    // Issue 7's table model: 1x28x28 input, 32-channel 3x3 stem, three basic blocks.
    c = ResNetConfig{.blocks = {1, 1, 1}, .widths = {32, 64, 128}, .in_channels = 1, .stem_channels = 32,
                     .cifar_stem = true, .num_classes = num_classes};
  } else if (name == "fmnist_resnet8_half") {
    // The same at half the width (a quarter of the multiply-adds): the quick table's model.
    c = ResNetConfig{.blocks = {1, 1, 1}, .widths = {16, 32, 64}, .in_channels = 1, .stem_channels = 16,
                     .cifar_stem = true, .num_classes = num_classes};
  } else {
    throw Error("ResNet: unknown model '" + name +
                "' (resnet18, resnet34, resnet50, fmnist_resnet8, fmnist_resnet8_half)");
  }
  return std::make_shared<ResNet>(c, gen);
}

ResNet::ResNet(const ResNetConfig& c, Generator* gen) : config(c) {
  QUANTA_CHECK(!c.blocks.empty() && c.blocks.size() == c.widths.size(), "ResNet: blocks and widths differ in length");
  conv1 = RegisterModule("conv1", c.cifar_stem ? MakeConv(c.in_channels, c.stem_channels, 3, 1, gen)
                                               : MakeConv(c.in_channels, c.stem_channels, 7, 2, gen));
  bn1 = RegisterModule("bn1", std::make_shared<nn::BatchNorm2d>(c.stem_channels));
  int64_t channels = c.stem_channels;
  for (size_t s = 0; s < c.blocks.size(); ++s) {
    auto stage = std::make_shared<nn::Sequential>();
    std::string stage_name = "layer" + std::to_string(s + 1);
    for (int b = 0; b < c.blocks[s]; ++b) {
      auto block = std::make_shared<ResNetBlock>(c.bottleneck, channels, c.widths[s], b == 0 && s > 0 ? 2 : 1, gen);
      channels = block->out_channels;
      stage->Append(block);
      blocks.emplace_back(stage_name + "." + std::to_string(b), block);
    }
    RegisterModule(stage_name, stage);
  }
  fc = RegisterModule("fc", std::make_shared<nn::Linear>(channels, c.num_classes, true, gen));
}

Tensor ResNet::Forward(const Tensor& x) {
  QUANTA_CHECK(x.dim() == 4 && x.size(1) == config.in_channels, "ResNet: expected (N, ", config.in_channels,
               ", H, W) images, got ", x.Describe());
  Tensor y = bn1->Forward(conv1->Forward(x), {.relu = true});
  if (!config.cifar_stem) y = MaxPool2d(y, Pool2dOptions{.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}});
  for (auto& [name, block] : blocks) y = block->Forward(y);
  return fc->Forward(Mean(y, {2, 3}));
}

void ResNet::ConvertTo(quant::IntegerBuilder& b) const {
  // Max pooling commutes with quantization: the stem's output is quantized for
  // the first block, then pooled.
  int x = b.Conv("conv1", *conv1, bn1.get(), b.input(), /*relu=*/true, blocks[0].second->convs[0].get());
  if (!config.cifar_stem) x = b.MaxPool(x, Pool2dOptions{.kernel = {3, 3}, .stride = {2, 2}, .padding = {1, 1}});
  for (size_t k = 0; k < blocks.size(); ++k) {
    const auto& [name, block] = blocks[k];
    const nn::QuantizableLayer* next = k + 1 < blocks.size() ? blocks[k + 1].second->convs[0].get() : nullptr;
    int h = x;
    size_t last = block->convs.size() - 1;
    for (size_t i = 0; i < last; ++i) {
      h = b.Conv(name + ".conv" + std::to_string(i + 1), *block->convs[i], block->bns[i].get(), h, /*relu=*/true,
                 block->convs[i + 1].get());
    }
    // The downsample's output is only added: it stays f32 and enters the last
    // convolution's epilogue as its residual.
    int shortcut = block->downsample_conv ? b.Conv(name + ".downsample.0", *block->downsample_conv,
                                                   block->downsample_bn.get(), x, /*relu=*/false, nullptr)
                                          : x;
    x = b.Conv(name + ".conv" + std::to_string(last + 1), *block->convs[last], block->bns[last].get(), h,
               /*relu=*/true, next, shortcut);
  }
  b.Linear("fc", *fc, b.GlobalAvgPool(x), /*relu=*/false, nullptr);
}

}  // namespace quanta::models
