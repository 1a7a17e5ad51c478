// Observers on known distributions, quantizers, policies, the QAT pass and its
// reports.
#include <cmath>

#include "autograd/autograd.h"
#include "gtest/gtest.h"
#include "nn/checkpoint.h"
#include "quant/conv_bn.h"
#include "quant/prepare.h"

namespace quanta::quant {
namespace {

TEST(QuantSpec, Ranges) {
  EXPECT_EQ(QuantSpec{.bits = 8}.quant_min(), -127);  // the design's symmetric 2^(b-1) - 1
  EXPECT_EQ(QuantSpec{.bits = 8}.quant_max(), 127);
  EXPECT_EQ((QuantSpec{.bits = 4, .symmetric = false}.quant_min()), -8);
  EXPECT_EQ((QuantSpec{.bits = 4, .is_signed = false}.quant_max()), 15);
  EXPECT_EQ((QuantSpec{.bits = 2}.quant_max()), 1);
  // Symmetric: scale = amax / qmax; affine: (hi - lo) / (qmax - qmin), zp = qmin - round(lo / scale).
  auto [s, z] = ParamsForRange(Tensor::FromVector<float>({-2}, {1}), Tensor::FromVector<float>({3}, {1}), {.bits = 4});
  EXPECT_FLOAT_EQ(s.item<float>(), 3.0f / 7);
  EXPECT_EQ(z.item<float>(), 0);
  auto [sa, za] = ParamsForRange(Tensor::FromVector<float>({-1}, {1}), Tensor::FromVector<float>({2}, {1}),
                                 {.bits = 4, .symmetric = false});
  EXPECT_FLOAT_EQ(sa.item<float>(), 3.0f / 15);
  EXPECT_EQ(za.item<float>(), -8 + 5);  // -8 - round(-1 / 0.2)
  // A range that excludes 0 is widened to hold it.
  auto [sp, zp] = ParamsForRange(Tensor::FromVector<float>({1}, {1}), Tensor::FromVector<float>({2}, {1}),
                                 {.bits = 8, .is_signed = false, .symmetric = false});
  EXPECT_FLOAT_EQ(sp.item<float>(), 2.0f / 255);
  EXPECT_EQ(zp.item<float>(), 0);
}

TEST(Observers, ConvergeOnKnownDistributions) {
  Generator gen(1);
  QuantSpec spec{.bits = 8, .symmetric = false};
  MinMaxObserver minmax(spec);
  EmaMinMaxObserver ema(spec, 0.9);
  for (int i = 0; i < 200; ++i) {
    Tensor x = Uniform({4096}, -2, 3, &gen);
    minmax.Observe(x);
    ema.Observe(x);
  }
  EXPECT_NEAR(minmax.Range().first.item<float>(), -2, 1e-3);
  EXPECT_NEAR(minmax.Range().second.item<float>(), 3, 1e-3);
  EXPECT_NEAR(ema.Range().first.item<float>(), -2, 0.01);   // each batch's min is within ~1e-3 of -2
  EXPECT_NEAR(ema.Range().second.item<float>(), 3, 0.01);
  // Per channel: channel c of a (4, 3) stream spans [-c - 1, c + 1].
  MinMaxObserver per_channel({.bits = 8, .per_channel = true, .axis = 1});
  per_channel.Observe(Mul(Uniform({1000, 3}, -1, 1, &gen), Tensor::FromVector<float>({1, 2, 3}, {3})));
  std::vector<float> hi = per_channel.Range().second.ToVector<float>();
  EXPECT_NEAR(hi[0], 1, 0.01);
  EXPECT_NEAR(hi[2], 3, 0.03);
  // The 99th percentile of |N(0, 1)| is 2.576.
  PercentileObserver pct({.bits = 8}, 99.0);
  for (int i = 0; i < 20; ++i) pct.Observe(Normal({10000}, 0, 1, &gen));
  EXPECT_NEAR(pct.Range().second.item<float>(), 2.576, 0.05);
  // MSE search clips a heavy-tailed distribution at 4 bits and beats min/max on MSE.
  Tensor heavy = Mul(Normal({20000}, 0, 1, &gen), Exp(Mul(Normal({20000}, 0, 1, &gen), 0.8)));
  QuantSpec s4{.bits = 4};
  MseObserver mse(s4);
  MinMaxObserver mm(s4);
  mse.Observe(heavy);
  mm.Observe(heavy);
  EXPECT_LT(mse.Range().second.item<float>(), mm.Range().second.item<float>());
  auto err = [&](Observer& o) {
    auto [scale, zp] = o.Params();
    return Mean(Square(Sub(FakeQuantize(heavy, scale, zp, {.quant_min = -7, .quant_max = 7}), heavy))).item<float>();
  };
  EXPECT_LT(err(mse), err(mm));
  // The search runs once per new batch, range or spec, not on every call.
  const int searches = mse.searches();
  const float clipped = mse.Range().second.item<float>();
  for (int i = 0; i < 3; ++i) mse.Params();
  EXPECT_EQ(mse.searches(), searches);
  {
    NoGradGuard no_grad;  // a loaded range (a checkpoint): searched again, over [-2, 2]
    auto state = mse.StateDict();
    FillInplace(state.at("min_val"), -2.0);
    FillInplace(state.at("max_val"), 2.0);
  }
  EXPECT_NE(mse.Range().second.item<float>(), clipped);
  EXPECT_LE(mse.Range().second.item<float>(), 2.0f);
  EXPECT_EQ(mse.searches(), searches + 1);
  mse.SetSpec({.bits = 8});
  mse.Range();
  EXPECT_EQ(mse.searches(), searches + 2);
  mse.Observe(heavy);
  mse.Range();
  EXPECT_EQ(mse.searches(), searches + 3);
  // Observer state is module state: it goes into checkpoints.
  EXPECT_EQ(minmax.StateDict().count("min_val"), 1u);
  EXPECT_EQ(pct.StateDict().count("histogram"), 1u);
}

TEST(Quantizers, FakeQuantAndLsq) {
  Generator gen(2);
  FakeQuant fq({.bits = 4, .symmetric = false}, ObserverKind::kMinMax);
  Tensor x = Uniform({64}, -1, 2, &gen);
  Tensor y = fq.Forward(x);  // training mode: observes, then quantizes
  auto [s, z] = fq.Params();
  EXPECT_EQ(y.ToVector<float>(), FakeQuantize(x, s, z, {.quant_min = -8, .quant_max = 7}).ToVector<float>());
  fq.SetEnabled(false);
  EXPECT_EQ(fq.Forward(x).ToVector<float>(), x.ToVector<float>());
  // LSQ: step initialized to 2 mean|x| / sqrt(Qp); gradient scaled by 1 / sqrt(N Qp).
  LsqQuantizer lsq({.bits = 4});
  Tensor w = Tensor::FromVector<float>({0.5f, -1.5f, 1.0f, -1.0f}, {4}).SetRequiresGrad();
  Tensor out = lsq.Forward(w);
  EXPECT_NEAR(lsq.scale.item<float>(), 2 * 1.0 / std::sqrt(7.0), 1e-6);
  Backward(Sum(out));
  double s0 = 2 / std::sqrt(7.0), expected = 0;
  for (float v : {0.5f, -1.5f, 1.0f, -1.0f}) expected += std::nearbyint(v / s0) - v / s0;  // all inside
  EXPECT_NEAR(lsq.scale.grad().item<float>(), expected / std::sqrt(4 * 7.0), 1e-5);
  // Per-channel LSQ has one step per channel from the start (optimizers hold it).
  LsqQuantizer per_channel({.bits = 4, .per_channel = true, .axis = 0}, 3);
  EXPECT_EQ(per_channel.scale.shape(), (Shape{3}));
}

// The design's symmetric EMA, worked by hand with decay 0.5: batches with max|x|
// 2, 4 (its minimum -4 dominates) and 1 give alpha 2, 3, 2; the min/max pair on
// the same batches tracks each end on its own (hi: 2, 1.5, 1.25; lo: -1, -2.5, -1.5)
// and so gives max(|lo|, |hi|) = 2, 2.5, 1.5, a different range.
TEST(Observers, EmaAbsMaxIsTheDesignsSymmetricForm) {
  QuantSpec sym{.bits = 8};
  EmaAbsMaxObserver abs_max(sym, 0.5);
  EmaMinMaxObserver pair({.bits = 8}, 0.5);
  std::vector<std::vector<float>> batches = {{-1, 2}, {-4, 1}, {-0.5f, 1}};
  std::vector<double> alpha = {2, 3, 2}, pair_amax = {2, 2.5, 1.5};
  for (size_t i = 0; i < batches.size(); ++i) {
    Tensor x = Tensor::FromVector<float>(batches[i], {2});
    abs_max.Observe(x);
    pair.Observe(x);
    EXPECT_FLOAT_EQ(abs_max.Range().second.item<float>(), alpha[i]) << i;
    EXPECT_FLOAT_EQ(abs_max.Range().first.item<float>(), -alpha[i]) << i;
    EXPECT_FLOAT_EQ(abs_max.Params().first.item<float>(), alpha[i] / 127) << i;  // scale alpha / (2^(b-1) - 1)
    auto [lo, hi] = pair.Range();
    EXPECT_FLOAT_EQ(std::max(-lo.item<float>(), hi.item<float>()), pair_amax[i]) << i;
  }
  // Per channel along 0: channel 0 sees max|x| 3 then 1 (alpha 2), channel 1 sees 1 then 5 (alpha 3).
  EmaAbsMaxObserver per_channel({.bits = 4, .per_channel = true, .axis = 0}, 0.5);
  per_channel.Observe(Tensor::FromVector<float>({3, -1, 0, 1}, {2, 2}));
  per_channel.Observe(Tensor::FromVector<float>({1, 0, -5, 2}, {2, 2}));
  EXPECT_EQ(per_channel.Range().second.ToVector<float>(), (std::vector<float>{2, 3}));
  EXPECT_THROW(EmaAbsMaxObserver({.bits = 8, .symmetric = false}), Error);
  // The QAT pass uses it for symmetric (weight) specs: EMA quantizers at decay 0 for weights.
  auto net = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(2, 2));
  auto report = PrepareQat(*net, *MixedPrecisionPolicy::Parse("default 8 8 ema"));
  auto& wq = dynamic_cast<FakeQuant&>(*report.rows[0].weight);
  EXPECT_NE(dynamic_cast<EmaAbsMaxObserver*>(&wq.observer()), nullptr);
  EXPECT_NE(dynamic_cast<EmaMinMaxObserver*>(&dynamic_cast<FakeQuant&>(*report.rows[0].input).observer()), nullptr);
}

// LSQ's gradient scale for an activation counts the features of one example
// (N_F), not the batch: for x (2, 4) with a step of 1 and all values inside the
// range, d(sum y)/ds = sum(round(x/s) - x/s) / sqrt(4 Qp); a weight quantizer
// over the same 8 values uses sqrt(8 Qp).
TEST(Quantizers, LsqActivationGradientScaleCountsOneExample) {
  std::vector<float> v = {0.25f, 1.25f, -0.5f, 2.5f, 0.75f, -1.75f, 1.5f, 0.3f};
  double sum = 0;
  for (float x : v) sum += std::nearbyint(x) - x;  // s = 1: round half to even
  for (bool activation : {true, false}) {
    LsqQuantizer q({.bits = 4}, 1, activation);
    Tensor x = Tensor::FromVector<float>(v, {2, 4});
    q.Forward(x);  // initializes the step from the batch
    {
      NoGradGuard no_grad;
      q.scale.CopyFrom(Ones({1}));
    }
    Backward(Sum(q.Forward(x)));
    double n = activation ? 4 : 8;
    EXPECT_NEAR(q.scale.grad().item<float>(), sum / std::sqrt(n * 7), 1e-6) << (activation ? "activation" : "weight");
  }
}

// A recording quantizer's input statistics (the PTQ report's columns): |x| over
// x = -50..50 is 0 once and 1..50 twice each, so sorted it has 25 at index
// 0.5 * 100 and 50 at index 0.99 * 100; the maximum is 50. At 8 bits with
// min/max ranges nothing is clipped.
TEST(Quantizers, RecordedInputStatistics) {
  FakeQuant q({.bits = 8}, ObserverKind::kMinMax);
  std::vector<float> v;
  for (int i = -50; i <= 50; ++i) v.push_back(static_cast<float>(i));
  q.SetRecording(true);
  q.Forward(Tensor::FromVector<float>(v, {101}));
  const Quantizer::Stats& s = q.stats();
  ASSERT_TRUE(s.valid);
  EXPECT_EQ(s.abs_p50, 25);
  EXPECT_EQ(s.abs_p99, 50);
  EXPECT_EQ(s.abs_max, 50);
  EXPECT_EQ(s.clip_rate, 0);
}

// Note [LSQ steps through zero]: a step parameter carried below zero by an
// update quantizes with its magnitude and keeps a gradient (of the opposite
// sign), so the next updates can bring it back; x = (0.13, -0.5) at 8 bits and
// s = -0.1: y = (0.1, -0.5), and d(sum y)/ds = -(round(1.3) - 1.3 + round(-5) + 5)
// / sqrt(2 * 127) = 0.3 / sqrt(254).
TEST(Quantizers, LsqStepBelowZeroQuantizesWithItsMagnitude) {
  LsqQuantizer q({.bits = 8});
  Tensor x = Tensor::FromVector<float>({0.13f, -0.5f}, {2});
  q.Forward(x);
  {
    NoGradGuard no_grad;
    q.scale.CopyFrom(Tensor::FromVector<float>({-0.1f}, {1}));
  }
  Tensor y = q.Forward(x);
  std::vector<float> got = y.ToVector<float>();
  EXPECT_FLOAT_EQ(got[0], 0.1f);
  EXPECT_FLOAT_EQ(got[1], -0.5f);
  EXPECT_FLOAT_EQ(q.Params().first.item<float>(), 0.1f);  // what conversion stores
  Backward(Sum(y));
  EXPECT_NEAR(q.scale.grad().item<float>(), 0.3 / std::sqrt(254.0), 1e-6);
}

// Note [LSQ+ offsets on the integer grid]: a learned offset of -6.4 steps is used
// as -6.4 -> -6 in the forward pass (the integer model's zero point), and its
// gradient passes straight through: for x clipped at either end, dy/doffset = -s.
TEST(Quantizers, LsqPlusOffsetIsRoundedInTheForwardPass) {
  LsqQuantizer q({.bits = 4, .symmetric = false}, 1, /*activation=*/true);
  Tensor x = Tensor::FromVector<float>({0, 1, 2, 3}, {1, 4});
  q.Forward(x);
  {
    NoGradGuard no_grad;
    q.scale.CopyFrom(Tensor::FromVector<float>({0.5f}, {1}));
    q.offset.CopyFrom(Tensor::FromVector<float>({-6.4f}, {1}));  // rounds to -6
  }
  EXPECT_EQ(q.Params().second.item<float>(), -6);
  // Range [s (qmin - z), s (qmax - z)] = [0.5 (-8 + 6), 0.5 (7 + 6)] = [-1, 6.5]: 7 is clipped to 6.5.
  Tensor in = Tensor::FromVector<float>({-3, 0.3f, 7, 2.6f}, {1, 4});
  Tensor y = q.Forward(in);
  EXPECT_EQ(y.ToVector<float>(), (std::vector<float>{-1, 0.5f, 6.5f, 2.5f}));
  Backward(Sum(y));
  EXPECT_FLOAT_EQ(q.offset.grad().item<float>(), -0.5f * 2);  // two clipped values, -s each
}

// LsqInit::kMse: the first batch's error after fake quantization is no larger
// than with the paper's start or with min/max, per channel (weights) and for an
// affine activation; the steps then still learn.
TEST(Quantizers, LsqMseStartReconstructsTheFirstBatchBest) {
  Generator gen(7);
  auto error = [](LsqQuantizer& q, const Tensor& x) {
    NoGradGuard no_grad;
    return Sum(Square(Sub(q.Forward(x), x))).item<float>();
  };
  // Heavy-tailed weights: a few large values make min/max and mean|x| starts poor at 2 bits.
  Tensor w = Mul(Normal({8, 64}, 0, 0.05, &gen), Exp(Normal({8, 64}, 0, 0.8, &gen)));
  for (int bits : {2, 3, 4}) {
    QuantSpec spec{.bits = bits, .per_channel = true, .axis = 0};
    LsqQuantizer paper(spec, 8), mse(spec, 8, false, LsqInit::kMse);
    MinMaxObserver range(spec);
    range.Observe(w);
    Tensor minmax = FakeQuantize(w, range.Params().first, range.Params().second,
                                 {.quant_min = spec.quant_min(), .quant_max = spec.quant_max(), .axis = 0});
    double e_mse = error(mse, w);
    EXPECT_LE(e_mse, error(paper, w)) << bits;
    EXPECT_LE(e_mse, Sum(Square(Sub(minmax, w))).item<float>()) << bits;
  }
  Tensor a = Relu(Normal({16, 32}, 0.2, 1, &gen));
  QuantSpec aspec{.bits = 2, .symmetric = false};
  LsqQuantizer paper(aspec, 1, true), mse(aspec, 1, true, LsqInit::kMse);
  EXPECT_LE(error(mse, a), error(paper, a));
  Tensor x = a.Detach().SetRequiresGrad();
  Backward(Sum(Square(mse.Forward(x))));
  EXPECT_NE(mse.scale.grad().item<float>(), 0);
}

TEST(Policy, ParsesAndResolves) {
  auto p = MixedPrecisionPolicy::Parse(
      "# W/A bits per layer\n"
      "default 4 4 lsq\n"
      "layer3.* 6 6\n"
      "layer3.0.conv2 2 8 ewgs   # later rules win\n");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->For("layer1.0.conv1", false).weight_bits, 4);
  EXPECT_EQ(p->For("layer3.1.conv1", false).act_bits, 6);
  QConfig c = p->For("layer3.0.conv2", false);
  EXPECT_EQ(c.weight_bits, 2);
  EXPECT_EQ(c.act_bits, 8);
  EXPECT_EQ(c.kind, QuantizerKind::kEwgs);
  EXPECT_EQ(p->For("conv1", /*first_or_last=*/true).weight_bits, 8);  // first and last stay 8-bit
  EXPECT_EQ(std::string(MixedPrecisionPolicy::Parse("default 4 9\n").status().message()),
            "policy:1: bits 4/9 outside [2, 8]");
  EXPECT_EQ(std::string(MixedPrecisionPolicy::Parse("\nfc 8 8 magic\n").status().message()),
            "policy:2: unknown quantizer \"magic\" (ema, minmax, ewgs, lsq, percentile, mse, apot)");
  EXPECT_EQ(MixedPrecisionPolicy::Load("/no/such/policy").status().code(), absl::StatusCode::kNotFound);
}

// A policy built as a struct (as the apps do) is checked where it is used.
TEST(MixedPrecisionPolicy, StructPoliciesAreValidated) {
  EXPECT_EQ(QuantizerKindFromName("ewgs"), QuantizerKind::kEwgs);
  EXPECT_EQ(QuantizerKindFromName("mse"), QuantizerKind::kMse);
  EXPECT_FALSE(QuantizerKindFromName("EMA").has_value());
  MixedPrecisionPolicy p;
  p.defaults.weight_bits = 3;
  p.rules.push_back({"layer2.*", 4, 9, std::nullopt});
  EXPECT_EQ(std::string(p.Validate().message()), "rule layer2.*: bits 4/9 outside [2, 8]");
  p.rules.clear();
  EXPECT_TRUE(p.Validate().ok());
  p.defaults.act_bits = 1;
  EXPECT_EQ(std::string(p.Validate().message()), "default: bits 3/1 outside [2, 8]");
  Generator gen(3);
  nn::Sequential net(std::make_shared<nn::Linear>(4, 8, true, &gen), std::make_shared<nn::Linear>(8, 2, true, &gen));
  try {
    PrepareQat(net, p);
    ADD_FAILURE() << "PrepareQat took act_bits 1";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("prepare_qat: default: bits 3/1 outside [2, 8]"), std::string::npos) << e.what();
  }
}

TEST(PrepareQat, KeepsNamesAttachesQuantizersAndReports) {
  Generator gen(3);
  auto net = std::make_shared<nn::Sequential>(
      std::make_shared<nn::Conv2d>(1, 4, 3, Conv2dOptions{.padding = {1, 1}}, false, &gen),
      std::make_shared<nn::ReLU>(), std::make_shared<nn::Conv2d>(4, 4, 3, Conv2dOptions{.padding = {1, 1}}, true, &gen),
      std::make_shared<nn::AdaptiveAvgPool2d>(1, 1), std::make_shared<nn::Flatten>(),
      std::make_shared<nn::Linear>(4, 3, true, &gen));
  std::vector<std::string> before;
  for (auto& [n, t] : net->NamedParameters()) before.push_back(n);
  auto policy = MixedPrecisionPolicy::Parse("default 4 4 ema\n");
  PrepareReport report = PrepareQat(*net, *policy);
  ASSERT_EQ(report.rows.size(), 3u);
  EXPECT_EQ(report.rows[0].config.weight_bits, 8);  // first
  EXPECT_EQ(report.rows[1].config.weight_bits, 4);
  EXPECT_EQ(report.rows[2].config.weight_bits, 8);  // last
  std::vector<std::string> after;
  for (auto& [n, t] : net->NamedParameters()) after.push_back(n);
  EXPECT_EQ(after, before);  // EMA quantizers add buffers, not parameters
  EXPECT_EQ(net->StateDict().count("2.weight_quant.observer.min_val"), 1u);
  Tensor x = Normal({2, 1, 6, 6}, 0, 1, &gen);
  Tensor y = net->Forward(x);
  EXPECT_EQ(y.shape(), (Shape{2, 3}));
  EXPECT_TRUE(report.rows[1].weight->ready());
  std::string table = QuantReport(report);
  EXPECT_NE(table.find("W4A4"), std::string::npos) << table;
  EXPECT_NE(table.find("SQNR"), std::string::npos);
  // Size at the policy: 4-bit conv weights, 8-bit first and last, f32 biases, f32 scales.
  int64_t expected_bits = 36 * 8 + 4 * 32 + 144 * 4 + 4 * 32 + 4 * 32 + 12 * 8 + 3 * 32 + 3 * 32;
  EXPECT_EQ(ModelSizeBytes(*net, report), (expected_bits + 7) / 8);
  // Progressive: 8 bits first, then 6, then the policy's 4 (never below it).
  ProgressiveBits prog({8, 6, 4}, 2);
  prog.Apply(report, 0);
  EXPECT_EQ(report.rows[1].weight->spec().bits, 8);
  EXPECT_FALSE(report.rows[1].weight->ready());  // re-warmed
  prog.Apply(report, 3);
  EXPECT_EQ(report.rows[1].weight->spec().bits, 6);
  prog.Apply(report, 9);
  EXPECT_EQ(report.rows[1].weight->spec().bits, 4);
  EXPECT_EQ(report.rows[0].weight->spec().bits, 8);
}

}  // namespace
}  // namespace quanta::quant

namespace quanta::quant {
namespace {

TEST(ConvBn, FoldingMatchesConvThenBatchNorm) {
  Generator gen(4);
  auto conv = std::make_shared<nn::Conv2d>(3, 5, 3, Conv2dOptions{.padding = {1, 1}}, true, &gen);
  auto bn = std::make_shared<nn::BatchNorm2d>(5);
  {
    NoGradGuard no_grad;  // non-trivial statistics and affine parameters
    bn->running_mean.CopyFrom(Normal({5}, 0, 1, &gen));
    bn->running_var.CopyFrom(Uniform({5}, 0.5, 2, &gen));
    bn->weight.CopyFrom(Uniform({5}, 0.5, 1.5, &gen));
    bn->bias.CopyFrom(Normal({5}, 0, 1, &gen));
  }
  Tensor x = Normal({2, 3, 6, 6}, 0, 1, &gen);
  conv->Eval();
  bn->Eval();
  Tensor reference = bn->Forward(conv->Forward(x));
  ConvBn2d fused(conv, bn);
  fused.Eval();
  std::vector<float> a = fused.Forward(x).ToVector<float>(), b = reference.ToVector<float>();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4) << i;
  // In training (no quantizer) it equals conv then batch norm with batch statistics.
  fused.Train();
  Tensor rm = bn->running_mean.Clone(), rv = bn->running_var.Clone();
  Tensor train_out = fused.Forward(x);
  Tensor expected = BatchNorm(quanta::Conv2d(x, conv->weight, conv->bias, conv->options), rm, rv, bn->weight, bn->bias,
                              true, bn->momentum, bn->eps);
  a = train_out.ToVector<float>(), b = expected.ToVector<float>();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4) << i;
  EXPECT_EQ(bn->running_mean.ToVector<float>(), rm.ToVector<float>());  // the same statistics update
  // After freeze_bn_after steps, training uses the running statistics.
  ConvBn2d frozen(conv, bn, /*freeze_bn_after=*/0);
  frozen.Train();
  Tensor before = bn->running_mean.Clone();
  frozen.Forward(x);
  EXPECT_EQ(bn->running_mean.ToVector<float>(), before.ToVector<float>());
}

TEST(PrepareQat, QuantizerParametersTrainInTheirOwnGroupAndCheckpoint) {
  Generator gen(5);
  auto net = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(4, 8, true, &gen), std::make_shared<nn::ReLU>(),
                                              std::make_shared<nn::Linear>(8, 2, true, &gen));
  PrepareQat(*net, *MixedPrecisionPolicy::Parse("default 4 4 lsq\nfirst_last_8bit off\n"));
  std::vector<nn::ParamGroup> groups = ParameterGroups(*net);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].params.size(), 4u);  // two weights, two biases
  EXPECT_EQ(groups[1].params.size(), 6u);  // per layer: weight step, input step and offset
  EXPECT_EQ(groups[1].lr_mult, 0.1);
  nn::SGD opt(groups, {.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-4});
  Tensor x = Normal({16, 4}, 0, 1, &gen);
  Tensor y = Tensor::FromVector<int64_t>(std::vector<int64_t>(16, 1), {16});
  opt.ZeroGrad();
  Backward(CrossEntropy(net->Forward(x), y));
  opt.Step();
  std::string path = std::string(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp") + "/qat.safetensors";
  ASSERT_TRUE(nn::SaveCheckpoint(path, *net, &opt).ok());
  auto copy = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(4, 8, true, &gen), std::make_shared<nn::ReLU>(),
                                               std::make_shared<nn::Linear>(8, 2, true, &gen));
  PrepareQat(*copy, *MixedPrecisionPolicy::Parse("default 4 4 lsq\nfirst_last_8bit off\n"));
  nn::SGD opt2(ParameterGroups(*copy), {.lr = 0.1, .momentum = 0.9});
  ASSERT_TRUE(nn::LoadCheckpoint(path, *copy, &opt2).ok());
  NoGradGuard no_grad;
  EXPECT_EQ(copy->Forward(x).ToVector<float>(), net->Forward(x).ToVector<float>());
}

// Observers' per-channel ranges take their shape from the data: a fresh prepared
// model loads a trained one's checkpoint (resizable buffers) and computes the same.
TEST(PrepareQat, ObserverStateCheckpointsIntoAFreshModel) {
  Generator gen(6);
  auto make = [&] {
    auto net = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(4, 8, true, &gen),
                                                std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(8, 2, true, &gen));
    PrepareQat(*net, *MixedPrecisionPolicy::Parse("default 4 4 ema\n"));
    return net;
  };
  auto net = make();
  Tensor x = Normal({16, 4}, 0, 1, &gen);
  net->Train();
  net->Forward(x);  // observes: per-channel weight ranges become (8) and (2)
  std::string path = std::string(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp") + "/ema.safetensors";
  ASSERT_TRUE(nn::SaveCheckpoint(path, *net).ok());
  auto copy = make();
  auto loaded = nn::LoadCheckpoint(path, *copy);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(copy->StateDict().at("0.weight_quant.observer.min_val").shape(), (Shape{8}));
  net->Eval();
  copy->Eval();
  NoGradGuard no_grad;
  EXPECT_EQ(copy->Forward(x).ToVector<float>(), net->Forward(x).ToVector<float>());
  // Other buffers keep their shape check.
  TensorMap bad = net->StateDict();
  bad["0.input_quant.observer.observed"] = Zeros({3});
  EXPECT_FALSE(copy->LoadStateDict(bad).ok());
}

}  // namespace
}  // namespace quanta::quant

namespace quanta::quant {
namespace {

// After re-estimation each batch norm holds the plain mean over the batches of
// its input's batch statistics (per channel: mean, unbiased variance), measured
// here on the conv's own eval output; ranges, momenta and modes stay as they were.
TEST(ReestimateBatchNorm, RunningStatisticsAreTheMeanOverBatchesOfTheQuantizedModel) {
  Generator gen(8);
  auto conv = std::make_shared<nn::Conv2d>(2, 3, 3, Conv2dOptions{.padding = {1, 1}}, false, &gen);
  auto bn = std::make_shared<nn::BatchNorm2d>(3);
  nn::Sequential net(conv, bn);
  PrepareReport report = PrepareQat(net, *MixedPrecisionPolicy::Parse("default 4 4 ema\nfirst_last_8bit off\n"));
  std::vector<Tensor> batches;
  for (int b = 0; b < 3; ++b) batches.push_back(Normal({4, 2, 5, 5}, 0.5 * b, 1.0 + b, &gen));
  net.Train();
  net.Forward(batches[0]);  // the observers see data once, then hold their ranges
  auto* input = dynamic_cast<FakeQuant*>(report.rows[0].input.get());
  ASSERT_NE(input, nullptr);
  auto range_before = input->Params();
  net.Eval();
  std::vector<double> mean(3, 0.0), var(3, 0.0);
  {
    NoGradGuard no_grad;
    for (const Tensor& x : batches) {
      std::vector<float> y = conv->Forward(x).Permute({1, 0, 2, 3}).Contiguous().ToVector<float>();
      const size_t n = y.size() / 3;
      for (int c = 0; c < 3; ++c) {
        double m = 0, ss = 0;
        for (size_t i = 0; i < n; ++i) m += y[c * n + i];
        m /= n;
        for (size_t i = 0; i < n; ++i) ss += (y[c * n + i] - m) * (y[c * n + i] - m);
        mean[c] += m / batches.size();
        var[c] += ss / (n - 1) / batches.size();
      }
    }
  }
  EXPECT_EQ(ReestimateBatchNorm(report, net, batches, [&](const Tensor& x) { return net.Forward(x); }), 1);
  std::vector<float> rm = bn->running_mean.ToVector<float>(), rv = bn->running_var.ToVector<float>();
  for (int c = 0; c < 3; ++c) {
    EXPECT_NEAR(rm[c], mean[c], 1e-4 * (1 + std::abs(mean[c]))) << "channel " << c;
    EXPECT_NEAR(rv[c], var[c], 1e-4 * var[c]) << "channel " << c;
  }
  EXPECT_FALSE(net.is_training());
  EXPECT_EQ(bn->momentum, 0.1);
  EXPECT_TRUE(input->observing());
  auto range_after = input->Params();
  EXPECT_EQ(range_after.first.To(DType::kF64).item<double>(), range_before.first.To(DType::kF64).item<double>())
      << "ranges stay as trained";
  EXPECT_EQ(range_after.second.To(DType::kF64).item<double>(), range_before.second.To(DType::kF64).item<double>());
}

TEST(Calibrate, BiasCorrectionRemovesTheMeanShiftAndTheReportShowsInputs) {
  Generator gen(6);
  auto make = [&] {
    Generator g(7);
    return std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(32, 4, true, &g));
  };
  auto f32 = make();
  std::vector<Tensor> batches;
  for (int b = 0; b < 8; ++b) batches.push_back(Normal({64, 32}, 1.0, 1.0, &gen));  // inputs with a mean
  Tensor held_out = Normal({512, 32}, 1.0, 1.0, &gen);
  Tensor want;
  {
    NoGradGuard no_grad;
    want = f32->Forward(held_out);
  }
  auto shift = [&](bool correct) {
    auto net = make();
    auto report = PrepareQat(*net, *MixedPrecisionPolicy::Parse("default 3 8 minmax\nfirst_last_8bit off\n"));
    Calibrate(report, *net, batches, [&](const Tensor& x) { return net->Forward(x); }, correct);
    NoGradGuard no_grad;
    net->Eval();
    Tensor mean_error = Mean(Sub(net->Forward(held_out), want), {0});
    if (!correct) {
      std::string table = QuantReport(report);
      EXPECT_NE(table.find("input clip% SQNR"), std::string::npos) << table;
      EXPECT_EQ(table.find(" - \n"), std::string::npos) << "input statistics missing:\n" << table;
    }
    return Max(Abs(mean_error)).item<float>();
  };
  double before = shift(false), after = shift(true);
  EXPECT_LT(after, before / 3) << "mean output shift " << before << " -> " << after;
}

}  // namespace
}  // namespace quanta::quant

namespace quanta::quant {
namespace {

// With L = a/2 ||W_q y||^2 and W_q = I, the Hessian with respect to the input
// quantizer's output y is a I: delta = (Tr(H)/N) / (3 std(g)) = a / (3 std(a y)).
// For the weight quantizer: Tr(H) = a * out * sum_n ||y_n||^2 over N = out * in
// elements, g_W = a W_q Y^T Y.
TEST(Ewgs, AdaptiveDeltaMatchesTheHessianFormula) {
  Generator gen(8);
  auto linear = std::make_shared<nn::Linear>(4, 4, false, &gen);
  {
    NoGradGuard no_grad;
    linear->weight.CopyFrom(Eye(4));
  }
  nn::Sequential net(linear);
  auto report = PrepareQat(net, *MixedPrecisionPolicy::Parse("default 8 8 ewgs\nfirst_last_8bit off\n"));
  Tensor x = Normal({32, 4}, 0.5, 1, &gen);
  const double a = 3.0;
  auto loss = [&](int) { return Mul(Sum(Square(net.Forward(x))), a / 2); };
  net.Forward(x);  // observers see the data once
  FreezeObservers(report);
  // All quantizers are probed at once, so each trace estimate carries cross terms
  // that vanish only in expectation: many probes for a tight check.
  std::vector<double> delta = EstimateEwgsDelta(report, net, loss, /*batches=*/1, /*probes=*/256);
  ASSERT_EQ(delta.size(), 2u);
  auto [s, z] = report.rows[0].input->Params();
  Tensor y = FakeQuantize(x, s, z, {.quant_min = -128, .quant_max = 127});
  double sd_y = std::sqrt(Var(y.To(DType::kF64)).item<double>());
  // delta is applied to distances in steps (Note [EWGS delta in steps]): the
  // real-unit formula times the step. The input's step is s; the weight's,
  // max|W| / 127 = 1 / 127 in every channel of W = I.
  double step_x = s.item<float>(), step_w = 1.0 / 127;
  EXPECT_NEAR(delta[1], step_x * a / (3 * a * sd_y), 0.05 * delta[1]);  // ~1.4% standard error at 256 probes
  double sum_sq = Sum(Square(y)).item<float>();
  Tensor g_w = Mul(Matmul(y.Transpose(0, 1), y), a);  // W_q = I
  double sd_g = std::sqrt(Var(g_w.To(DType::kF64)).item<double>());
  EXPECT_NEAR(delta[0], step_w * (a * 4 * sum_sq / 16) / (3 * sd_g), 0.05 * delta[0]);
  EXPECT_EQ(dynamic_cast<FakeQuant&>(*report.rows[0].input).ewgs_delta(), delta[1]);
  EXPECT_FALSE(linear->weight.grad().defined());
}

}  // namespace
}  // namespace quanta::quant
