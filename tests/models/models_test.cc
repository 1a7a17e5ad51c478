// Reference models: parameter counts against torchvision's (ResNet-18/34/50) and
// hand counts, forward shapes, stable parameter names.
#include <cmath>

#include "core/grad_mode.h"
#include "gtest/gtest.h"
#include "models/resnet.h"
#include "models/registry.h"
#include "models/resnet_cifar.h"

namespace quanta::models {
namespace {

TEST(Models, ResNetParameterCountsMatchTorchvision) {
  Generator gen(0);
  // torchvision.models.resnet{18,34,50}(): sum(p.numel() for p in m.parameters()).
  EXPECT_EQ(ResNet::Make("resnet18", 1000, &gen)->NumParameters(), 11689512);
  EXPECT_EQ(ResNet::Make("resnet34", 1000, &gen)->NumParameters(), 21797672);
  EXPECT_EQ(ResNet::Make("resnet50", 1000, &gen)->NumParameters(), 25557032);
  // By hand: stem 288 + 64, block1 2*9216 + 128, block2 18432 + 36864 + 256 + 2048
  // + 128, block3 73728 + 147456 + 512 + 8192 + 256, fc 1280 + 10.
  EXPECT_EQ(ResNet::Make("fmnist_resnet8", 10, &gen)->NumParameters(), 308074);
  // ResNet-20 (option A): stem 432 + 32, stage 1 3 * 4672, stage 2 13952 + 2 * 18560,
  // stage 3 55552 + 2 * 73984, fc 650.
  EXPECT_EQ(CifarResNet::Make(20, 10, &gen)->NumParameters(), 269722);
}

TEST(Models, ForwardShapesAndNames) {
  Generator gen(1);
  NoGradGuard no_grad;
  auto r50 = ResNet::Make("resnet50", 10, &gen);
  r50->Eval();
  EXPECT_EQ(r50->Forward(Normal({2, 3, 64, 64}, 0, 1, &gen)).shape(), (Shape{2, 10}));
  auto names = r50->StateDict();
  EXPECT_TRUE(names.count("layer1.0.downsample.0.weight"));
  EXPECT_TRUE(names.count("layer4.2.bn3.running_var"));
  EXPECT_TRUE(names.count("fc.bias"));
  auto r18 = ResNet::Make("resnet18", 100, &gen, /*cifar_stem=*/true);
  r18->Eval();
  EXPECT_EQ(r18->Forward(Normal({2, 3, 32, 32}, 0, 1, &gen)).shape(), (Shape{2, 100}));
  EXPECT_EQ(r18->conv1->weight.shape(), (Shape{64, 3, 3, 3}));
  auto fm = ResNet::Make("fmnist_resnet8", 10, &gen);
  fm->Eval();
  EXPECT_EQ(fm->Forward(Normal({3, 1, 28, 28}, 0, 1, &gen)).shape(), (Shape{3, 10}));
  EXPECT_THROW(ResNet::Make("resnet51", 10, &gen), Error);
}

// Every model by name: bf16 autocast forward, and a checkpoint round trip into a
// freshly built model gives the same outputs.
TEST(Models, EveryNamedModelAutocastsAndCheckpoints) {
  for (std::string name : {"resnet20", "resnet18_cifar", "fmnist_resnet8", "tiny_cnn"}) {
    SCOPED_TRACE(name);
    int64_t channels = name == "fmnist_resnet8" ? 1 : 3, size = name == "fmnist_resnet8" ? 28 : 32;
    Generator gen(2), other(3);
    auto net = Make(name, 10, channels, &gen);
    auto copy = Make(name, 10, channels, &other);
    net->Eval();
    copy->Eval();
    Tensor x = Normal({2, channels, size, size}, 0, 1, &gen);
    NoGradGuard no_grad;
    {
      AutocastGuard amp(DType::kBF16);
      Tensor y = net->Forward(x);
      EXPECT_EQ(y.shape(), (Shape{2, 10}));
      for (float v : y.To(DType::kF32).ToVector<float>()) EXPECT_TRUE(std::isfinite(v));
    }
    ASSERT_TRUE(copy->LoadStateDict(net->StateDict()).ok());
    EXPECT_EQ(copy->Forward(x).ToVector<float>(), net->Forward(x).ToVector<float>());
  }
  EXPECT_THROW(Make("fmnist_resnet8", 10, 3, nullptr), Error);  // a 1-channel model given RGB data
}

}  // namespace
}  // namespace quanta::models
