// CIFAR ResNets: construction (torchvision-style names and Kaiming init) and forward.
#include "models/resnet_cifar.h"

#include "core/error.h"
#include "nn/init.h"

namespace quanta::models {
namespace {

nn::Conv2d* Conv3x3(int64_t in, int64_t out, int64_t stride, Generator* gen) {
  Conv2dOptions o;
  o.stride[0] = o.stride[1] = stride;
  o.padding[0] = o.padding[1] = 1;
  auto* conv = new nn::Conv2d(in, out, 3, o, /*bias=*/false, gen);
  nn::KaimingNormal(conv->weight, gen, 0, nn::FanMode::kFanOut);
  return conv;
}

}  // namespace

BasicBlock::BasicBlock(int64_t in, int64_t out, int64_t s, Generator* gen)
    : in_channels(in), out_channels(out), stride(s) {
  conv1 = RegisterModule("conv1", std::shared_ptr<nn::Conv2d>(Conv3x3(in, out, s, gen)));
  bn1 = RegisterModule("bn1", std::make_shared<nn::BatchNorm2d>(out));
  conv2 = RegisterModule("conv2", std::shared_ptr<nn::Conv2d>(Conv3x3(out, out, 1, gen)));
  bn2 = RegisterModule("bn2", std::make_shared<nn::BatchNorm2d>(out));
}

Tensor BasicBlock::Forward(const Tensor& x_in) {
  // conv1 and the shortcut read the block input as conv1 quantizes it, the value
  // the integer model holds (Note [One quantized value, several readers] in
  // nn/layers.h); option A pads the quantized value with exact zeros.
  Tensor x = conv1->QuantizeInput(x_in);
  // Each ReLU and the residual add run inside batch norm's pass (nn::BatchNorm's
  // epilogue).
  Tensor h = bn1->Forward(conv1->ForwardQuantized(x), {.relu = true});
  Tensor shortcut = x;
  if (stride != 1 || in_channels != out_channels) {
    // Option A: subsample, then pad the new channels with zeros on both sides.
    shortcut = x.Slice(2, 0, x.size(2), stride).Slice(3, 0, x.size(3), stride);
    int64_t extra = out_channels - in_channels, before = extra / 2;
    Shape pad = shortcut.shape();
    pad[1] = before;
    Shape pad_after = shortcut.shape();
    pad_after[1] = extra - before;
    // The zeros in x's layout: channels-last beside a channels-last x, so that
    // the concatenation is channels-last too (Note [Channels-last concat] in
    // core/ops.cc).
    auto zeros = [&](const Shape& s) {
      return x.suggests_channels_last()
                 ? Zeros({s[0], s[2], s[3], s[1]}, x.dtype(), x.device()).Permute({0, 3, 1, 2})
                 : Zeros(s, x.dtype(), x.device());
    };
    shortcut = Concat({zeros(pad), shortcut, zeros(pad_after)}, 1);
  }
  return bn2->Forward(conv2->Forward(h), {.residual = shortcut, .relu = true});
}

CifarResNet::CifarResNet(int n, int64_t num_classes, Generator* gen) {
  conv1 = RegisterModule("conv1", std::shared_ptr<nn::Conv2d>(Conv3x3(3, 16, 1, gen)));
  bn1 = RegisterModule("bn1", std::make_shared<nn::BatchNorm2d>(16));
  std::shared_ptr<nn::Sequential>* stages[3] = {&layer1, &layer2, &layer3};
  int64_t channels = 16;
  for (int s = 0; s < 3; ++s) {
    int64_t out = 16 << s;
    auto stage = std::make_shared<nn::Sequential>();
    for (int b = 0; b < n; ++b) {
      stage->Append(std::make_shared<BasicBlock>(channels, out, b == 0 && s > 0 ? 2 : 1, gen));
      channels = out;
    }
    *stages[s] = RegisterModule("layer" + std::to_string(s + 1), stage);
  }
  fc = RegisterModule("fc", std::make_shared<nn::Linear>(64, num_classes, true, gen));
}

std::shared_ptr<CifarResNet> CifarResNet::Make(int depth, int64_t num_classes, Generator* gen) {
  QUANTA_CHECK(depth >= 8 && (depth - 2) % 6 == 0, "CifarResNet: depth ", depth, " is not 6n + 2");
  return std::make_shared<CifarResNet>((depth - 2) / 6, num_classes, gen);
}

Tensor CifarResNet::Forward(const Tensor& x) {
  QUANTA_CHECK(x.dim() == 4 && x.size(1) == 3, "CifarResNet: expected (N, 3, H, W) images, got ", x.Describe());
  Tensor y = bn1->Forward(conv1->Forward(x), {.relu = true});
  y = layer3->Forward(layer2->Forward(layer1->Forward(y)));
  return fc->Forward(Mean(y, {2, 3}));
}

void CifarResNet::ConvertTo(quant::IntegerBuilder& b) const {
  std::vector<std::pair<std::string, std::shared_ptr<BasicBlock>>> blocks;
  for (const auto& [stage_name, stage] : NamedChildren()) {
    if (!dynamic_cast<nn::Sequential*>(stage.get())) continue;
    for (const auto& [i, m] : stage->NamedChildren()) {
      blocks.emplace_back(stage_name + "." + i, std::dynamic_pointer_cast<BasicBlock>(m));
    }
  }
  QUANTA_CHECK(!blocks.empty(), "CifarResNet: no blocks to convert");
  int x = b.Conv("conv1", *conv1, bn1.get(), b.input(), /*relu=*/true, blocks[0].second->conv1.get());
  for (size_t k = 0; k < blocks.size(); ++k) {
    const auto& [name, block] = blocks[k];
    const nn::QuantizableLayer* next = k + 1 < blocks.size() ? blocks[k + 1].second->conv1.get() : nullptr;
    int h = b.Conv(name + ".conv1", *block->conv1, block->bn1.get(), x, /*relu=*/true, block->conv2.get());
    int shortcut = x;
    if (block->stride != 1 || block->in_channels != block->out_channels) {
      int64_t extra = block->out_channels - block->in_channels;
      shortcut = b.ShortcutPad(x, block->stride, extra / 2, extra - extra / 2);
    }
    // The last block's output feeds the average pool: it stays f32.
    x = b.Conv(name + ".conv2", *block->conv2, block->bn2.get(), h, /*relu=*/true, next, shortcut);
  }
  b.Linear("fc", *fc, b.GlobalAvgPool(x), /*relu=*/false, nullptr);
}

}  // namespace quanta::models
