// End-to-end training: an MLP learns XOR; a small CNN overfits 256 synthetic
// images to 100% training accuracy in f32 and under bf16 autocast; a run resumed
// from a checkpoint repeats the uninterrupted run's losses step for step.
#include "autograd/autograd.h"
#include "gtest/gtest.h"
#include "nn/checkpoint.h"
#include "nn/layers.h"
#include "nn/optim.h"

namespace quanta::nn {
namespace {

TEST(Training, MlpLearnsXor) {
  Generator gen(0);
  Sequential mlp(std::make_shared<Linear>(2, 8, true, &gen), std::make_shared<GELU>(),
                 std::make_shared<Linear>(8, 1, true, &gen));
  Tensor x = Tensor::FromVector<float>({0, 0, 0, 1, 1, 0, 1, 1}, {4, 2});
  Tensor y = Tensor::FromVector<float>({0, 1, 1, 0}, {4, 1});
  Adam opt({{mlp.Parameters()}}, {.lr = 0.05});
  float loss = 0;
  for (int step = 0; step < 400; ++step) {
    opt.ZeroGrad();
    Tensor l = BceWithLogits(mlp.Forward(x), y);
    Backward(l);
    opt.Step();
    loss = l.item<float>();
  }
  EXPECT_LT(loss, 0.05);
  std::vector<bool> predicted = Gt(mlp.Forward(x), 0).ToVector<bool>();
  EXPECT_EQ(predicted, (std::vector<bool>{false, true, true, false}));
}

// 256 single-channel 12x12 images in 4 classes: class k brightens quadrant k,
// under noise. Deterministic from the seed.
struct Data {
  Tensor images, labels;
};
Data SyntheticImages(int n, uint64_t seed) {
  Generator gen(seed);
  Tensor images = Normal({n, 1, 12, 12}, 0, 0.5, &gen);
  std::vector<int64_t> labels(n);
  for (int i = 0; i < n; ++i) {
    int k = i % 4;
    labels[i] = k;
    Tensor quadrant = images.Select(0, i).Narrow(1, (k / 2) * 6, 6).Narrow(2, (k % 2) * 6, 6);
    quadrant.CopyFrom(Add(quadrant, 1.5));
  }
  return {images, Tensor::FromVector<int64_t>(labels, {n})};
}

std::shared_ptr<Sequential> SmallCnn(uint64_t seed) {
  Generator gen(seed);
  Conv2dOptions pad1;
  pad1.padding[0] = pad1.padding[1] = 1;
  Conv2dOptions down = pad1;
  down.stride[0] = down.stride[1] = 2;
  return std::make_shared<Sequential>(
      std::make_shared<Conv2d>(1, 8, 3, pad1, false, &gen), std::make_shared<BatchNorm2d>(8),
      std::make_shared<ReLU>(), std::make_shared<Conv2d>(8, 16, 3, down, false, &gen),
      std::make_shared<BatchNorm2d>(16), std::make_shared<ReLU>(), std::make_shared<AdaptiveAvgPool2d>(1, 1),
      std::make_shared<Flatten>(), std::make_shared<Linear>(16, 4, true, &gen));
}

// Trains `epochs` over batches of 32 in a fixed order; returns each step's loss.
std::vector<float> Train(Sequential& net, Optimizer& opt, const Data& d, int first_step, int steps,
                         bool autocast) {
  std::vector<float> losses;
  int64_t n = d.images.size(0), batch = 32;
  for (int step = first_step; step < first_step + steps; ++step) {
    int64_t start = (step * batch) % n;
    Tensor x = d.images.Narrow(0, start, batch), y = d.labels.Narrow(0, start, batch);
    opt.ZeroGrad();
    Tensor loss;
    if (autocast) {
      AutocastGuard amp(DType::kBF16);
      loss = CrossEntropy(net.Forward(x).To(DType::kF32), y);
    } else {
      loss = CrossEntropy(net.Forward(x), y);
    }
    Backward(loss);
    opt.Step();
    losses.push_back(loss.item<float>());
  }
  return losses;
}

double Accuracy(Sequential& net, const Data& d) {
  NoGradGuard no_grad;
  net.Eval();
  Tensor predicted = Argmax(net.Forward(d.images), 1);
  net.Train();
  return Mean(Eq(predicted, d.labels).To(DType::kF32)).item<float>();
}

TEST(Training, SmallCnnOverfitsInF32AndBf16Autocast) {
  Data data = SyntheticImages(256, 1);
  auto f32 = SmallCnn(2);
  SGD opt({{f32->Parameters()}}, {.lr = 0.1, .momentum = 0.9});
  std::vector<float> losses = Train(*f32, opt, data, 0, 160, false);  // 20 epochs
  double acc_f32 = Accuracy(*f32, data);
  EXPECT_EQ(acc_f32, 1.0) << "final loss " << losses.back();
  EXPECT_LT(losses.back(), losses.front() / 10);

  auto bf16 = SmallCnn(2);
  SGD opt16({{bf16->Parameters()}}, {.lr = 0.1, .momentum = 0.9});
  Train(*bf16, opt16, data, 0, 160, true);
  for (Tensor& p : bf16->Parameters()) EXPECT_EQ(p.dtype(), DType::kF32);  // master weights
  double acc_bf16 = Accuracy(*bf16, data);
  EXPECT_NEAR(acc_bf16, acc_f32, 0.01);
}

TEST(Training, ResumedRunRepeatsTheLossesStepForStep) {
  Data data = SyntheticImages(256, 3);
  auto full = SmallCnn(4);
  SGD opt({{full->Parameters()}}, {.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-4});
  std::vector<float> uninterrupted = Train(*full, opt, data, 0, 12, false);

  auto first = SmallCnn(4);
  SGD opt1({{first->Parameters()}}, {.lr = 0.05, .momentum = 0.9, .weight_decay = 1e-4});
  std::vector<float> losses = Train(*first, opt1, data, 0, 5, false);
  std::string path = std::string(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp") + "/resume.safetensors";
  ASSERT_TRUE(SaveCheckpoint(path, *first, &opt1).ok());

  auto resumed = SmallCnn(99);  // different initial weights: all must come from the file
  SGD opt2({{resumed->Parameters()}}, {.lr = 0.5, .momentum = 0.9, .weight_decay = 1e-4});
  ASSERT_TRUE(LoadCheckpoint(path, *resumed, &opt2).ok());
  std::vector<float> rest = Train(*resumed, opt2, data, 5, 7, false);
  losses.insert(losses.end(), rest.begin(), rest.end());
  ASSERT_EQ(losses.size(), uninterrupted.size());
  for (size_t i = 0; i < losses.size(); ++i) EXPECT_EQ(losses[i], uninterrupted[i]) << "step " << i;
}

}  // namespace
}  // namespace quanta::nn
