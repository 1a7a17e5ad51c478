// Optimizers, parameter groups, clipping and schedules against hand-computed
// values (torch.optim's update rules).
#include <cmath>

#include "autograd/autograd.h"
#include "gtest/gtest.h"
#include "core/ops.h"
#include "nn/amp.h"
#include "nn/functional.h"
#include "nn/optim.h"

namespace quanta::nn {
namespace {

Tensor Param(std::vector<float> v) { return Tensor::FromVector<float>(v, {static_cast<int64_t>(v.size())}).SetRequiresGrad(); }
void SetGrad(Tensor& p, std::vector<float> g) { p.SetGrad(Tensor::FromVector<float>(g, p.shape())); }
float At(const Tensor& t, int i) { return t.ToVector<float>()[i]; }

TEST(Optim, SgdMomentumNesterovWeightDecay) {
  Tensor p = Param({1.0f});
  SGD sgd({{{p}}}, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.5});
  SetGrad(p, {1});
  sgd.Step();  // g = 1 + 0.5 = 1.5; v = 1.5; p = 1 - 0.15
  EXPECT_NEAR(At(p, 0), 0.85, 1e-6);
  SetGrad(p, {1});
  sgd.Step();  // g = 1 + 0.425 = 1.425; v = 0.9 * 1.5 + 1.425 = 2.775; p = 0.85 - 0.2775
  EXPECT_NEAR(At(p, 0), 0.5725, 1e-6);
  Tensor q = Param({1.0f});
  SGD nesterov({{{q}}}, {.lr = 0.1, .momentum = 0.9, .nesterov = true});
  SetGrad(q, {1});
  nesterov.Step();  // v = 1; step g + 0.9 v = 1.9
  EXPECT_NEAR(At(q, 0), 0.81, 1e-6);
  SetGrad(q, {1});
  nesterov.Step();  // v = 1.9; step 1 + 1.71 = 2.71
  EXPECT_NEAR(At(q, 0), 0.81 - 0.271, 1e-6);
}

TEST(Optim, AdamAndAdamW) {
  Tensor p = Param({1.0f});
  Adam adam({{{p}}}, {.lr = 0.1});
  SetGrad(p, {2});
  adam.Step();  // bias-corrected m = 2, v = 4: step = lr * 2 / (2 + eps)
  EXPECT_NEAR(At(p, 0), 0.9, 1e-6);
  SetGrad(p, {-1});
  adam.Step();
  double m = 0.9 * 0.2 + 0.1 * -1, v = 0.999 * 0.004 + 0.001 * 1;
  double step = 0.1 * (m / (1 - 0.81)) / (std::sqrt(v / (1 - 0.999 * 0.999)) + 1e-8);
  EXPECT_NEAR(At(p, 0), 0.9 - step, 1e-6);
  Tensor w = Param({1.0f});
  AdamW adamw({{{w}}}, {.lr = 0.1, .weight_decay = 0.01});
  SetGrad(w, {2});
  adamw.Step();  // decay first: 1 - 0.1 * 0.01 = 0.999, then the Adam step of 0.1
  EXPECT_NEAR(At(w, 0), 0.899, 1e-6);
}

TEST(Optim, GroupsHaveTheirOwnRateAndDecay) {
  Tensor a = Param({1.0f}), b = Param({1.0f});
  SGD sgd({{{a}}, {{b}, 0.1, 0.0, "quant"}}, {.lr = 1.0, .weight_decay = 1.0});
  SetGrad(a, {1});
  SetGrad(b, {1});
  sgd.Step();
  EXPECT_NEAR(At(a, 0), 1 - 1.0 * (1 + 1), 1e-6);  // base lr, decay 1
  EXPECT_NEAR(At(b, 0), 1 - 0.1 * 1, 1e-6);        // 0.1x lr, no decay
  sgd.ZeroGrad();
  EXPECT_FALSE(a.grad().defined());
}

TEST(Optim, ClipGradNormScalesToTheBound) {
  Tensor a = Param({0, 0}), b = Param({0});
  SetGrad(a, {3, 0});
  SetGrad(b, {4});
  EXPECT_NEAR(ClipGradNorm({a, b}, 1.0), 5.0, 1e-9);
  EXPECT_NEAR(At(a.grad(), 0), 0.6, 1e-5);
  EXPECT_NEAR(At(b.grad(), 0), 0.8, 1e-5);
  EXPECT_NEAR(ClipGradNorm({a, b}, 10.0), 1.0, 1e-5);  // below the bound: unchanged
  EXPECT_NEAR(At(b.grad(), 0), 0.8, 1e-5);
}

TEST(Optim, Schedules) {
  Tensor p = Param({0});
  SGD sgd({{{p}}}, {.lr = 1.0});
  StepLr step(&sgd, 10, 0.1);
  for (int i = 0; i < 10; ++i) step.Step();
  EXPECT_NEAR(sgd.lr(), 0.1, 1e-12);
  SGD sgd2({{{p}}}, {.lr = 2.0});
  CosineWarmup cosine(&sgd2, 4, 104, 0.0);
  EXPECT_NEAR(sgd2.lr(), 0.5, 1e-12);  // step 0 of 4 warmup steps
  for (int i = 0; i < 3; ++i) cosine.Step();
  EXPECT_NEAR(sgd2.lr(), 2.0, 1e-12);  // warmup done
  for (int i = 0; i < 51; ++i) cosine.Step();
  EXPECT_NEAR(sgd2.lr(), 1.0, 1e-12);  // halfway through the cosine
  for (int i = 0; i < 60; ++i) cosine.Step();
  EXPECT_NEAR(sgd2.lr(), 0.0, 1e-12);
  SGD linear_sgd({{{p}}}, {.lr = 2.0});
  LinearWarmup linear(&linear_sgd, 4, 104);
  EXPECT_NEAR(linear_sgd.lr(), 0.5, 1e-12);  // step 0 of 4 warmup steps
  linear.SetStep(4);
  EXPECT_NEAR(linear_sgd.lr(), 2.0, 1e-12);  // warmup done: (104 - 4) / 100 of the base
  linear.SetStep(54);
  EXPECT_NEAR(linear_sgd.lr(), 1.0, 1e-12);  // halfway down
  linear.SetStep(103);
  EXPECT_NEAR(linear_sgd.lr(), 0.02, 1e-12);
  linear.SetStep(200);
  EXPECT_NEAR(linear_sgd.lr(), 0.0, 1e-12);
  SGD sgd3({{{p}}}, {.lr = 1.0});
  OneCycle one(&sgd3, 1.0, 100, 0.3, 25, 1e4);
  EXPECT_NEAR(sgd3.lr(), 1.0 / 25, 1e-12);
  one.SetStep(29);
  EXPECT_NEAR(sgd3.lr(), 1.0, 1e-12);
  one.SetStep(99);
  EXPECT_NEAR(sgd3.lr(), 1.0 / 25 / 1e4, 1e-12);
}

TEST(Optim, StateRoundTrips) {
  Tensor p = Param({1.0f, 2.0f});
  Adam adam({{{p}}}, {.lr = 0.1});
  SetGrad(p, {1, 1});
  adam.Step();
  TensorMap state = adam.StateDict();
  EXPECT_EQ(state.count("group0.param0.exp_avg"), 1u);
  Tensor q = Param({1.0f, 2.0f});
  Adam other({{{q}}}, {.lr = 0.5});
  ASSERT_TRUE(other.LoadStateDict(state).ok());
  EXPECT_EQ(other.steps(), 1);
  EXPECT_NEAR(other.lr(), 0.1, 1e-12);
  state["group0.param7.exp_avg"] = Zeros({2});
  EXPECT_EQ(std::string(other.LoadStateDict(state).message()),
            "optimizer state: unexpected key \"group0.param7.exp_avg\"");
}

TEST(Amp, GradScalerSkipsNonFiniteStepsAndAdaptsTheScale) {
  Tensor p = Param({1.0f});
  SGD sgd({{{p}}}, {.lr = 1.0});
  GradScaler scaler(1024.0, 2.0, 0.5, /*growth_interval=*/2);
  // The scaled loss has a scaled gradient; Step divides it back out.
  Backward(scaler.Scale(Sum(Mul(p, 3.0))));
  EXPECT_NEAR(At(p.grad(), 0), 3 * 1024, 1e-3);
  EXPECT_TRUE(scaler.Step(sgd));
  EXPECT_NEAR(At(p, 0), 1 - 3, 1e-5);
  // An inf gradient: no step, the scale halves, the gradients are dropped.
  SetGrad(p, {INFINITY});
  EXPECT_FALSE(scaler.Step(sgd));
  EXPECT_NEAR(At(p, 0), -2, 1e-6);
  EXPECT_EQ(scaler.scale(), 512.0);
  EXPECT_FALSE(p.grad().defined());
  SetGrad(p, {NAN});
  EXPECT_FALSE(scaler.Step(sgd));
  EXPECT_EQ(scaler.scale(), 256.0);
  // Two clean steps in a row double it.
  SetGrad(p, {0});
  EXPECT_TRUE(scaler.Step(sgd));
  SetGrad(p, {0});
  EXPECT_TRUE(scaler.Step(sgd));
  EXPECT_EQ(scaler.scale(), 512.0);
}

TEST(Amp, F16AutocastTrainsWithTheScaler) {
  Generator gen(9);
  Tensor w = Normal({4, 1}, 0, 0.1, &gen).SetRequiresGrad();
  Tensor x = Normal({32, 4}, 0, 1, &gen);
  Tensor y = Matmul(x, Tensor::FromVector<float>({1, -2, 0.5, 3}, {4, 1}));
  SGD sgd({{{w}}}, {.lr = 0.05});
  GradScaler scaler(65536.0);
  float first = 0, last = 0;
  for (int step = 0; step < 60; ++step) {
    sgd.ZeroGrad();
    Tensor loss;
    {
      AutocastGuard amp(DType::kF16);
      Tensor pred = Matmul(x, w);
      EXPECT_EQ(pred.dtype(), DType::kF16);
      loss = MseLoss(pred.To(DType::kF32), y);
    }
    Backward(scaler.Scale(loss));
    scaler.Step(sgd);
    (step == 0 ? first : last) = loss.item<float>();
  }
  EXPECT_LT(last, first / 100);
  EXPECT_EQ(w.dtype(), DType::kF32);
}

}  // namespace
}  // namespace quanta::nn
