// Layers and losses: gradchecks in f64 (batch norm in train mode, layer norm,
// embedding, cross-entropy with smoothing and ignore_index, pooling, attention
// with masks) and hand-computed values.
#include <cmath>

#include "autograd/autograd.h"
#include "gtest/gtest.h"
#include "nn/functional.h"
#include "nn/init.h"
#include "nn/layers.h"

namespace quanta::nn {
namespace {

using V = const std::vector<Tensor>&;
Generator& Gen() {
  static Generator gen(11);
  return gen;
}
Tensor Randn(const Shape& s) { return Normal(s, 0, 1, &Gen(), DType::kF64).SetRequiresGrad(); }

void ExpectGradCheck(const char* what, const std::function<Tensor(V)>& fn, const std::vector<Tensor>& in) {
  GradCheckResult r = GradCheck(fn, in);
  EXPECT_TRUE(r.ok) << what << ": " << r.report;
}

TEST(Layers, GradChecks) {
  ExpectGradCheck("linear", [](V x) { return quanta::Linear(x[0], x[1], x[2]); },
                  {Randn({2, 3, 4}), Randn({5, 4}), Randn({5})});
  Tensor rm = Zeros({3}, DType::kF64), rv = Ones({3}, DType::kF64);
  ExpectGradCheck("batch_norm train",
                  [&](V x) { return BatchNorm(x[0], rm, rv, x[1], x[2], true, 0.1, 1e-5); },
                  {Randn({4, 3, 2, 2}), Randn({3}), Randn({3})});
  ExpectGradCheck("batch_norm train, relu(bn(x) + residual) fused",
                  [&](V x) { return BatchNorm(x[0], rm, rv, x[1], x[2], true, 0.1, 1e-5, {.residual = x[3], .relu = true}); },
                  {Randn({4, 3, 2, 2}), Randn({3}), Randn({3}), Randn({4, 3, 2, 2})});
  ExpectGradCheck("batch_norm eval", [&](V x) { return BatchNorm(x[0], rm, rv, x[1], x[2], false, 0.1, 1e-5); },
                  {Randn({2, 3, 2, 2}), Randn({3}), Randn({3})});
  ExpectGradCheck("layer_norm", [](V x) { return quanta::LayerNorm(x[0], {4}, x[1], x[2], 1e-5); },
                  {Randn({2, 3, 4}), Randn({4}), Randn({4})});
  Tensor idx = Tensor::FromVector<int64_t>({1, 3, 1, 0}, {2, 2});
  ExpectGradCheck("embedding", [&](V x) { return quanta::Embedding(idx, x[0]); }, {Randn({4, 3})});
  Tensor targets = Tensor::FromVector<int64_t>({2, 0, -100, 1}, {4});
  ExpectGradCheck("cross_entropy smoothing ignore",
                  [&](V x) { return CrossEntropy(x[0], targets, {.label_smoothing = 0.1}); }, {Randn({4, 3})});
  ExpectGradCheck("mse", [](V x) { return MseLoss(x[0], x[1]); }, {Randn({3, 2}), Randn({3, 2})});
  Tensor labels = Tensor::FromVector<double>({1, 0, 1, 0}, {4});
  ExpectGradCheck("bce_with_logits", [&](V x) { return BceWithLogits(x[0], labels); }, {Randn({4})});
  Pool2dOptions avg;
  avg.kernel[0] = avg.kernel[1] = 2;
  avg.padding[0] = avg.padding[1] = 1;
  ExpectGradCheck("avg_pool2d", [&](V x) { return quanta::AvgPool2d(x[0], avg); }, {Randn({1, 2, 4, 4})});
  ExpectGradCheck("adaptive_avg_pool2d uneven", [](V x) { return quanta::AdaptiveAvgPool2d(x[0], 2, 3); },
                  {Randn({1, 2, 5, 4})});
  ExpectGradCheck("adaptive_avg_pool2d global", [](V x) { return quanta::AdaptiveAvgPool2d(x[0], 1, 1); },
                  {Randn({2, 2, 3, 3})});
}

// Two classes, teacher logits (ln 3, 0), student (0, 0). T = 1: p_t = (3/4, 1/4),
// KL = 3/4 ln(3/2) + 1/4 ln(1/2) = 0.1308120. T = 2: p_t = (sqrt3, 1) / (sqrt3 + 1),
// KL = 0.0363408, times T^2 = 0.1453631; d/ds = T (p_s - p_t) / N = -/+ 0.2679492.
TEST(Layers, DistillationLossHandWorked) {
  Tensor teacher = Tensor::FromVector<double>({std::log(3.0), 0.0}, {1, 2}).SetRequiresGrad();
  Tensor student = Zeros({1, 2}, DType::kF64).SetRequiresGrad();
  EXPECT_NEAR(DistillationLoss(student, teacher, 1.0).item<double>(), 0.1308120, 1e-7);
  Tensor loss = DistillationLoss(student, teacher, 2.0);
  EXPECT_NEAR(loss.item<double>(), 0.1453631, 1e-7);
  Backward(loss);
  std::vector<double> g = student.grad().ToVector<double>();
  EXPECT_NEAR(g[0], -0.2679492, 1e-7);
  EXPECT_NEAR(g[1], 0.2679492, 1e-7);
  EXPECT_FALSE(teacher.grad().defined()) << "the teacher is a constant";
  // A student equal to its teacher has nothing to learn; a batch is averaged.
  Tensor two = Tensor::FromVector<double>({std::log(3.0), 0.0, 0.0, 0.0}, {2, 2});
  EXPECT_NEAR(DistillationLoss(two, two, 3.0).item<double>(), 0.0, 1e-12);
  Tensor both = Tensor::FromVector<double>({std::log(3.0), 0.0, std::log(3.0), 0.0}, {2, 2});
  EXPECT_NEAR(DistillationLoss(Zeros({2, 2}, DType::kF64), both, 1.0).item<double>(), 0.1308120, 1e-7);
  Tensor fixed = Randn({3, 4}).Detach();
  ExpectGradCheck("distillation", [&](V x) { return DistillationLoss(x[0], fixed, 2.5); }, {Randn({3, 4})});
  EXPECT_THROW(DistillationLoss(Zeros({2, 3}), Zeros({2, 4}), 1.0), Error);
  EXPECT_THROW(DistillationLoss(Zeros({2, 3}), Zeros({2, 3}), 0.0), Error);
}

TEST(Layers, MultiheadAttentionGradCheckWithMasks) {
  MultiheadAttention mha(4, 2, 0.0, &Gen());
  mha.To(DType::kF64);
  MultiheadAttention::Masks masks;
  masks.causal = true;
  masks.key_padding = Tensor::FromVector<bool>({false, false, true, false, false, false}, {2, 3});
  ExpectGradCheck("mha causal + padding", [&](V x) { return mha.Forward(x[0], x[0], x[0], masks); },
                  {Randn({2, 3, 4})});
  Tensor fixed = Normal({2, 3, 4}, 0, 1, &Gen(), DType::kF64);
  GradCheckResult r = GradCheck([&](V) { return mha.Forward(fixed, fixed, fixed, masks); }, {mha.in_proj_weight});
  EXPECT_TRUE(r.ok) << r.report;
  EXPECT_EQ(mha.Forward(Randn({2, 5, 4})).shape(), (Shape{2, 5, 4}));
  // A masked key has no influence: changing it leaves the outputs unchanged.
  Tensor x = Normal({2, 3, 4}, 0, 1, &Gen(), DType::kF64);
  Tensor y1 = mha.Forward(x, x, x, {.key_padding = masks.key_padding});
  Tensor x2 = x.Clone();
  x2.Select(0, 0).Select(0, 2).CopyFrom(Full({4}, 100.0, DType::kF64));  // batch 0, key 2 is padding
  Tensor k2 = x2, q = x;
  Tensor y2 = mha.Forward(q, k2, k2, {.key_padding = masks.key_padding});
  std::vector<double> a = y1.ToVector<double>(), b = y2.ToVector<double>();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-12) << i;
}

TEST(Layers, CrossEntropyHandValues) {
  Tensor logits = Tensor::FromVector<float>({0, 0, 0, 1, 2, 3}, {2, 3});
  Tensor t = Tensor::FromVector<int64_t>({1, 2}, {2});
  double lse2 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  double want = (std::log(3.0) + (lse2 - 3)) / 2;
  EXPECT_NEAR(CrossEntropy(logits, t).item<float>(), want, 1e-6);
  // ignore_index drops the second row; smoothing 1 averages -log p over classes.
  Tensor ti = Tensor::FromVector<int64_t>({1, -100}, {2});
  EXPECT_NEAR(CrossEntropy(logits, ti).item<float>(), std::log(3.0), 1e-6);
  EXPECT_NEAR(CrossEntropy(logits, t, {.label_smoothing = 1.0}).item<float>(),
              (std::log(3.0) + (lse2 - 2)) / 2, 1e-6);
  try {
    CrossEntropy(logits, Tensor::FromVector<int64_t>({3, 0}, {2}));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "cross_entropy: a target is outside [0, 3) and is not ignore_index -100");
  }
  EXPECT_NEAR(BceWithLogits(Tensor::FromVector<float>({0}, {1}), Tensor::FromVector<float>({1}, {1})).item<float>(),
              std::log(2.0), 1e-6);
}

// Note [Fused batch norm]: the fused kernel pair against the composition of ops
// it replaces, forward, backward and running statistics, in f32 with a mean far
// from 0; and the fused op is what ran (the output's graph node).
TEST(Layers, FusedBatchNormMatchesComposition) {
  Generator gen(5);
  for (bool affine : {true, false}) {
    Tensor x0 = Add(Normal({8, 5, 7, 6}, 0, 2, &gen), 3.0);
    Tensor w0 = Uniform({5}, 0.5, 1.5, &gen), b0 = Normal({5}, 0, 1, &gen);
    Tensor gy = Normal(x0.shape(), 0, 1, &gen);
    Tensor grads[2][3], y[2], rm[2], rv[2];
    for (int fused = 0; fused < 2; ++fused) {
      Tensor x = x0.Clone().SetRequiresGrad();
      Tensor w = affine ? w0.Clone().SetRequiresGrad() : Tensor(), b = affine ? b0.Clone().SetRequiresGrad() : Tensor();
      rm[fused] = Zeros({5});
      rv[fused] = Ones({5});
      y[fused] = fused ? BatchNorm(x, rm[fused], rv[fused], w, b, true, 0.1, 1e-5)
                       : BatchNormComposite(x, rm[fused], rv[fused], w, b, true, 0.1, 1e-5);
      if (fused) {
        ASSERT_NE(y[1].autograd_meta(), nullptr);
        ASSERT_NE(y[1].autograd_meta()->grad_fn, nullptr);
        EXPECT_EQ(y[1].autograd_meta()->grad_fn->op, Op::kBatchNorm) << "the fused kernel did not run";
      }
      Backward(Sum(Mul(y[fused], gy)));
      grads[fused][0] = x.grad();
      if (affine) grads[fused][1] = w.grad(), grads[fused][2] = b.grad();
    }
    auto expect_near = [](const Tensor& a, const Tensor& b, double tol, const char* what) {
      std::vector<float> u = a.ToVector<float>(), v = b.ToVector<float>();
      ASSERT_EQ(u.size(), v.size()) << what;
      for (size_t i = 0; i < u.size(); ++i) EXPECT_NEAR(u[i], v[i], tol * (1 + std::abs(v[i]))) << what << " " << i;
    };
    expect_near(y[1], y[0], 2e-6, "y");
    expect_near(rm[1], rm[0], 1e-6, "running mean");
    expect_near(rv[1], rv[0], 1e-6, "running var");
    expect_near(grads[1][0], grads[0][0], 2e-5, "grad x");
    if (affine) {
      expect_near(grads[1][1], grads[0][1], 2e-5, "grad weight");
      expect_near(grads[1][2], grads[0][2], 2e-5, "grad bias");
    }
  }
}

// Note [Fused layer norm]: the layer-norm and softmax kernels against the
// compositions of ops they replace (LayerNormComposite; exp(x - max) / sum),
// forward and gradients, in f32 with a mean far from 0 and in f64; and the
// fused ops are what ran (the outputs' graph nodes).
TEST(Layers, FusedLayerNormAndSoftmaxMatchCompositions) {
  Generator gen(6);
  for (DType d : {DType::kF32, DType::kF64}) {
    const double tol = d == DType::kF32 ? 2e-5 : 1e-12;
    Tensor x0 = Add(Normal({3, 7, 48}, 0, 2, &gen), 5.0).To(d);
    Tensor w0 = Uniform({48}, 0.5, 1.5, &gen).To(d), b0 = Normal({48}, 0, 1, &gen).To(d);
    Tensor s0 = Normal({3, 7, 48}, 0, 3, &gen).To(d);
    Tensor gy = Normal(x0.shape(), 0, 1, &gen).To(d);
    Tensor y[2], grads[2][4];
    for (int fused = 0; fused < 2; ++fused) {
      Tensor x = x0.Clone().SetRequiresGrad(), w = w0.Clone().SetRequiresGrad(), b = b0.Clone().SetRequiresGrad();
      Tensor sx = s0.Clone().SetRequiresGrad();
      Tensor ln = fused ? quanta::LayerNorm(x, {48}, w, b, 1e-5) : LayerNormComposite(x, {48}, w, b, 1e-5);
      Tensor sm[2];
      for (int64_t dim : {-1, 1}) {
        sm[dim == 1] = fused ? Softmax(sx, dim)
                             : [&] {
                                 Tensor e = Exp(Sub(sx, Max(sx.Detach(), {dim}, true)));
                                 return Div(e, Sum(e, {dim}, true));
                               }();
      }
      if (fused) {
        EXPECT_EQ(ln.autograd_meta()->grad_fn->op, Op::kLayerNorm) << "the layer-norm kernel did not run";
        EXPECT_EQ(sm[0].autograd_meta()->grad_fn->op, Op::kSoftmax) << "the softmax kernel did not run";
        EXPECT_EQ(sm[1].autograd_meta()->grad_fn->op, Op::kSoftmax) << "the softmax kernel did not run";
      }
      y[fused] = Concat({ln.Flatten(), sm[0].Flatten(), sm[1].Flatten()}, 0);
      Backward(Sum(Mul(Add(Add(ln, Mul(sm[0], 3.0)), Mul(sm[1], 2.0)), gy)));
      grads[fused][0] = x.grad(), grads[fused][1] = w.grad(), grads[fused][2] = b.grad(), grads[fused][3] = sx.grad();
    }
    auto expect_near = [&](const Tensor& a, const Tensor& b, const char* what) {
      std::vector<double> u = a.ToVector<double>(), v = b.ToVector<double>();
      ASSERT_EQ(u.size(), v.size()) << what;
      for (size_t i = 0; i < u.size(); ++i) EXPECT_NEAR(u[i], v[i], tol * (1 + std::abs(v[i]))) << what << " " << i;
    };
    expect_near(y[1], y[0], "layer norm and softmax");
    const char* names[4] = {"grad x", "grad weight", "grad bias", "grad softmax input"};
    for (int i = 0; i < 4; ++i) expect_near(grads[1][i], grads[0][i], names[i]);
  }
}

// Note [Batch norm epilogue]: BatchNorm2d with relu(bn(x) + residual) fused
// against the same layer followed by Add and Relu, through autograd: equal bit
// for bit, forward and every gradient (x, weight, bias, residual); the fused
// op is what ran (one graph node, with the epilogue's flags), and in eval mode
// the epilogue runs as ops.
TEST(Layers, BatchNormEpilogueMatchesAddAndRelu) {
  Generator gen(6);
  Tensor x0 = Normal({8, 5, 6, 6}, 0, 2, &gen).ChannelsLast(), r0 = Normal({8, 5, 6, 6}, 0, 1, &gen);
  Tensor gy = Normal(x0.shape(), 0, 1, &gen);
  for (bool with_residual : {false, true}) {
    Tensor y[2], grads[2][4];
    for (int fused = 0; fused < 2; ++fused) {
      Generator init(3);
      BatchNorm2d bn(5);
      {
        NoGradGuard no_grad;
        bn.weight.CopyFrom(Uniform({5}, 0.5, 1.5, &init));
        bn.bias.CopyFrom(Normal({5}, 0, 1, &init));
      }
      Tensor x = x0.Clone().SetRequiresGrad(), r = r0.Clone().SetRequiresGrad();
      BatchNormEpilogue epilogue{.residual = with_residual ? r : Tensor(), .relu = true};
      y[fused] = fused ? bn.Forward(x, epilogue) : ApplyEpilogue(bn.Forward(x), epilogue);
      if (fused) {
        const GradNode& node = *y[1].autograd_meta()->grad_fn;
        EXPECT_EQ(node.op, Op::kBatchNorm) << "the epilogue did not run in the batch-norm kernel";
        EXPECT_TRUE(node.attrs.relu);
        EXPECT_EQ(node.attrs.residual, with_residual);
      }
      Backward(Sum(Mul(y[fused], gy)));
      grads[fused][0] = x.grad(), grads[fused][1] = bn.weight.grad(), grads[fused][2] = bn.bias.grad();
      if (with_residual) grads[fused][3] = r.grad();
    }
    auto same = [](const Tensor& a, const Tensor& b, const char* what) {
      EXPECT_EQ(a.ToVector<float>(), b.ToVector<float>()) << what;
    };
    same(y[1], y[0], "y");
    same(grads[1][0], grads[0][0], "grad x");
    same(grads[1][1], grads[0][1], "grad weight");
    same(grads[1][2], grads[0][2], "grad bias");
    if (with_residual) same(grads[1][3], grads[0][3], "grad residual");
  }
  BatchNorm2d bn(5);
  bn.Eval();
  Tensor want = Relu(Add(bn.Forward(x0), r0));
  EXPECT_EQ(bn.Forward(x0, {.residual = r0, .relu = true}).ToVector<float>(), want.ToVector<float>());
  // In training, a residual the kernel cannot take (a broadcast one) is added after it.
  BatchNorm2d a(5), b(5);
  Tensor per_channel = Normal({1, 5, 1, 1}, 0, 1, &gen);
  EXPECT_EQ(a.Forward(x0, {.residual = per_channel, .relu = true}).ToVector<float>(),
            Relu(Add(b.Forward(x0), per_channel)).ToVector<float>());
}

TEST(Layers, BatchNormRunningStatisticsAndDropout) {
  BatchNorm2d bn(1, 1e-5, 0.5);
  Tensor x = Tensor::FromVector<float>({1, 2, 3, 6}, {4, 1, 1, 1});  // mean 3, biased var 3.5
  Tensor y = bn.Forward(x);
  EXPECT_NEAR(bn.running_mean.item<float>(), 1.5, 1e-6);                  // 0.5 * 0 + 0.5 * 3
  EXPECT_NEAR(bn.running_var.item<float>(), 0.5 + 0.5 * (14.0 / 3), 1e-5);  // unbiased var 14/3
  EXPECT_EQ(bn.num_batches_tracked.item<int64_t>(), 1);
  EXPECT_NEAR(y.ToVector<float>()[3], 3 / std::sqrt(3.5 + 1e-5), 1e-5);
  // Eval: the running statistics (mean 1.5, var 17/6), weight 2, bias 0.5;
  // 2 (x - 1.5) / sqrt(17/6 + 1e-5) + 0.5, worked out by hand.
  {
    NoGradGuard no_grad;
    bn.weight.CopyFrom(Tensor::FromVector<float>({2}, {1}));
    bn.bias.CopyFrom(Tensor::FromVector<float>({0.5}, {1}));
  }
  bn.Eval();
  std::vector<float> eval = bn.Forward(x).ToVector<float>();
  const std::vector<double> expected = {-0.0940875, 1.0940875, 2.2822624, 5.8467873};
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(eval[i], expected[i], 2e-6) << i;
  Generator gen(3);
  Dropout drop(0.25, &gen);
  Tensor d = drop.Forward(Ones({100000}));
  EXPECT_NEAR(Mean(d).item<float>(), 1.0, 0.02);                  // scaled by 1 / (1 - p)
  EXPECT_NEAR(Mean(Eq(d, 0).To(DType::kF32)).item<float>(), 0.25, 0.01);
  drop.Eval();
  EXPECT_EQ(drop.Forward(Ones({3})).ToVector<float>(), std::vector<float>(3, 1));
}

TEST(Layers, InitializersHaveTheirVariance) {
  Generator gen(4);
  Tensor w = Tensor::Empty({256, 128, 3, 3});
  KaimingNormal(w, &gen);
  EXPECT_NEAR(std::sqrt(Var(w).item<float>()), std::sqrt(2.0 / (128 * 9)), 2e-3);
  KaimingUniform(w, &gen);
  EXPECT_NEAR(std::sqrt(Var(w).item<float>()), std::sqrt(2.0 / (128 * 9)), 2e-3);
  Tensor l = Tensor::Empty({300, 200});
  XavierUniform(l, &gen);
  EXPECT_NEAR(Var(l).item<float>(), 2.0 / 500, 2e-4);
  XavierNormal(l, &gen, 2.0);
  EXPECT_NEAR(Var(l).item<float>(), 4 * 2.0 / 500, 8e-4);
  EXPECT_LE(Max(Abs(Linear(200, 300, true, &gen).weight)).item<float>(), 1 / std::sqrt(200.0) + 1e-6);
}

}  // namespace
}  // namespace quanta::nn
