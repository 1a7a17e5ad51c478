// APoT weights (quant/quantizer.h): the levels against the paper's sets of
// powers of two worked by hand, the forward values and both gradients on a
// weight whose normalized values are known, the starting threshold, and the
// integer model: the same outputs as the fake-quant model, codes from the
// codebook, stored as 4-bit indices, and files with a bad codebook refused.
#include <bit>
#include <cmath>
#include <cstdio>
#include <set>

#include "absl/strings/str_cat.h"
#include "autograd/autograd.h"
#include "core/grad_mode.h"
#include "core/ops.h"
#include "gtest/gtest.h"
#include "nn/functional.h"
#include "nn/layers.h"
#include "nn/optim.h"
#include "nn/safetensors.h"
#include "quant/convert.h"
#include "quant/prepare.h"

namespace quanta::quant {
namespace {

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name;
}

// The paper's level sets (normalized to a maximum of 1), worked by hand:
// 3 bits {0, 2^-3, 2^-2, 2^-1} / 2^-1; 4 bits {0, 2^-1, 2^-2, 2^-4} + {0, 2^-3}
// = {0, 1/16, 1/8, 3/16, 1/4, 3/8, 1/2, 5/8}, / (5/8).
TEST(Apot, LevelsAreTheNormalizedSumsOfPowersOfTwo) {
  auto normalized = [](int bits) {
    std::vector<int32_t> c = ApotQuantizer::Levels(bits);
    std::vector<double> out;
    for (int32_t v : c) out.push_back(static_cast<double>(v) / c.back());
    return out;
  };
  EXPECT_EQ(normalized(2), (std::vector<double>{0, 1}));
  EXPECT_EQ(normalized(3), (std::vector<double>{0, 0.25, 0.5, 1}));
  std::vector<double> four = normalized(4), want4 = {0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 1};
  ASSERT_EQ(four.size(), want4.size());
  for (size_t i = 0; i < four.size(); ++i) EXPECT_NEAR(four[i], want4[i], 1e-12) << i;
  EXPECT_EQ(ApotQuantizer::Levels(4).back(), 10);
  // 5 bits: 16 magnitudes (sign + 4 bits), each the sum of at most two powers of
  // two, the largest 2^-1 + 2^-2 = 48 / 64.
  std::vector<int32_t> five = ApotQuantizer::Levels(5);
  EXPECT_EQ(five.size(), 16u);
  EXPECT_EQ(five.back(), 48);
  for (int32_t c : five) EXPECT_LE(std::popcount(static_cast<uint32_t>(c)), 2) << c;
  for (int bits = 2; bits <= 5; ++bits) EXPECT_EQ(ApotQuantizer::Levels(bits).size(), size_t{1} << (bits - 1));
  EXPECT_THROW(ApotQuantizer(6), Error);
  EXPECT_THROW(ApotQuantizer(1), Error);
}

// w = mu + k t with alpha = 1 / std(t): then (w - mu) / (std(w) alpha) = t, and
// the output is the nearest 4-bit level of t times the step std(w) alpha / 10 = k / 10.
TEST(Apot, ForwardProjectsOntoTheLevelsAndGradientsFollowThePaper) {
  const std::vector<double> t = {0.04, 0.16, 0.26, 0.49, 0.51, 0.69, 0.71, 0.95, 1.4};
  // The nearest of {0, .1, .2, .3, .4, .6, .8, 1} to each, in tenths (1.4 clips to 1).
  const std::vector<int> want_codes = {0, 2, 3, 4, 6, 6, 8, 10, 10};
  const double k = 0.02, mu = 0.01;
  std::vector<float> w;
  for (double v : t) w.push_back(static_cast<float>(mu + k * v));
  for (double v : t) w.push_back(static_cast<float>(mu - k * v));
  double mean_t = 0, var_t = 0;  // of the 18 values +-t (mean 0)
  for (double v : t) var_t += 2 * v * v;
  var_t /= 17;
  const double std_t = std::sqrt(var_t), sigma = k * std_t;
  (void)mean_t;

  ApotQuantizer q(4);
  {
    NoGradGuard no_grad;
    FillInplace(q.alpha, 1.0 / std_t);
    FillInplace(q.initialized, 1);
  }
  Tensor wt = Tensor::FromVector(w, {2, 9}).SetRequiresGrad();
  Tensor y = q.Forward(wt);
  std::vector<float> got = y.ToVector<float>();
  for (size_t i = 0; i < t.size(); ++i) {
    EXPECT_NEAR(got[i], want_codes[i] * k / 10, 1e-7) << "t = " << t[i];
    EXPECT_NEAR(got[i + t.size()], -want_codes[i] * k / 10, 1e-7) << "t = -" << t[i];
  }
  // Loss: the sum of the positive half. d/dw: 1 there (straight through, the
  // clipped 1.4 too), 0 elsewhere. d/dalpha = sigma * (sum over |t| <= 1 of
  // (level - t) + 1 for 1.4) = sigma * (-.04 + .04 + .04 - .09 + .09 - .09 + .09 + .05 + 1)
  // = 1.09 sigma.
  std::vector<float> mask(18, 0.f);
  for (size_t i = 0; i < t.size(); ++i) mask[i] = 1.f;
  Backward(Sum(Mul(y, Tensor::FromVector(mask, {2, 9}))));
  std::vector<float> gw = wt.grad().ToVector<float>();
  for (size_t i = 0; i < 18; ++i) EXPECT_FLOAT_EQ(gw[i], mask[i]) << i;
  EXPECT_NEAR(q.alpha.grad().item<float>(), 1.09 * sigma, 1e-6);
  // The integer form: the same codes and step.
  Quantizer::WeightGrid g = q.Grid(wt);
  EXPECT_EQ(g.qmin, -10);
  EXPECT_EQ(g.qmax, 10);
  ASSERT_EQ(g.scales.size(), 2u);
  EXPECT_NEAR(g.scales[0], k / 10, 1e-9);
  for (size_t i = 0; i < t.size(); ++i) {
    EXPECT_EQ(g.codes[i], want_codes[i]);
    EXPECT_EQ(g.codes[i + t.size()], -want_codes[i]);
    EXPECT_FLOAT_EQ(static_cast<float>(g.codes[i] * g.scales[0]), got[i]);
  }
  EXPECT_NEAR(g.clip, 2.0 / 18, 1e-12);  // +-1.4
}

// One threshold per output channel: each row is normalized by its own mean and
// std and projected with its own alpha. Row r = mu_r +- k_r t (the values of the
// test above), alpha_r = 1 / std(t): row r's outputs are the same codes times
// k_r / 10, and alpha_r's gradient is row r's own 1.09 sigma_r times the weight
// the loss gives the row.
TEST(Apot, PerChannelThresholdsActRowByRow) {
  const std::vector<double> t = {0.04, 0.16, 0.26, 0.49, 0.51, 0.69, 0.71, 0.95, 1.4};
  const std::vector<int> want_codes = {0, 2, 3, 4, 6, 6, 8, 10, 10};
  const double k[2] = {0.02, 0.5}, mu[2] = {0.01, -0.3};
  std::vector<float> w;
  for (int r = 0; r < 2; ++r) {
    for (double v : t) w.push_back(static_cast<float>(mu[r] + k[r] * v));
    for (double v : t) w.push_back(static_cast<float>(mu[r] - k[r] * v));
  }
  double var_t = 0;
  for (double v : t) var_t += 2 * v * v;
  const double std_t = std::sqrt(var_t / 17);

  ApotQuantizer q(4, 2);
  EXPECT_TRUE(q.spec().per_channel);
  ASSERT_EQ(q.alpha.numel(), 2);
  {
    NoGradGuard no_grad;
    FillInplace(q.alpha, 1.0 / std_t);
    FillInplace(q.initialized, 1);
  }
  Tensor wt = Tensor::FromVector(w, {2, 18}).SetRequiresGrad();
  Tensor y = q.Forward(wt);
  std::vector<float> got = y.ToVector<float>();
  for (int r = 0; r < 2; ++r) {
    for (size_t i = 0; i < t.size(); ++i) {
      EXPECT_NEAR(got[r * 18 + i], want_codes[i] * k[r] / 10, 1e-6 * k[r]) << r << ", t = " << t[i];
      EXPECT_NEAR(got[r * 18 + 9 + i], -want_codes[i] * k[r] / 10, 1e-6 * k[r]) << r << ", t = -" << t[i];
    }
  }
  // Loss: row 0's positive half plus twice row 1's.
  std::vector<float> mask(36, 0.f);
  for (size_t i = 0; i < t.size(); ++i) mask[i] = 1.f, mask[18 + i] = 2.f;
  Backward(Sum(Mul(y, Tensor::FromVector(mask, {2, 18}))));
  std::vector<float> ga = q.alpha.grad().ToVector<float>();
  EXPECT_NEAR(ga[0], 1.09 * k[0] * std_t, 1e-6);
  EXPECT_NEAR(ga[1], 2 * 1.09 * k[1] * std_t, 1e-5);
  auto [scale, zero] = q.Params();
  ASSERT_EQ(scale.numel(), 2);
  EXPECT_NEAR(scale.ToVector<float>()[1], k[1] / 10, 1e-7);
  Quantizer::WeightGrid g = q.Grid(wt);
  ASSERT_EQ(g.scales.size(), 2u);
  EXPECT_NEAR(g.scales[0], k[0] / 10, 1e-9);
  EXPECT_NEAR(g.scales[1], k[1] / 10, 1e-8);
  for (size_t i = 0; i < t.size(); ++i) {
    EXPECT_EQ(g.codes[i], want_codes[i]);
    EXPECT_EQ(g.codes[18 + 9 + i], -want_codes[i]);
  }
  // A threshold count that is not the weight's output channels is refused.
  ApotQuantizer three(4, 3);
  EXPECT_THROW(three.Forward(wt), Error);
}

// Each channel's starting threshold is the one a per-tensor quantizer picks for
// that channel alone.
TEST(Apot, PerChannelStartSearchesEachChannel) {
  Generator gen(5);
  Tensor w = Normal({4, 6, 3, 3}, 0, 1, &gen);
  // Channels of very different spread and shape: scale and cube some rows.
  std::vector<float> v = w.ToVector<float>();
  for (size_t i = 0; i < v.size(); ++i) {
    size_t r = i / 54;
    v[i] = r == 1 ? v[i] * v[i] * v[i] : r == 2 ? 0.01f * v[i] : v[i];
  }
  w = Tensor::FromVector(v, {4, 6, 3, 3});
  NoGradGuard no_grad;
  ApotQuantizer q(3, 4);
  Tensor out = q.Forward(w);
  std::vector<float> alpha = q.alpha.ToVector<float>();
  for (int64_t r = 0; r < 4; ++r) {
    Tensor row = Tensor::FromVector(std::vector<float>(v.begin() + r * 54, v.begin() + (r + 1) * 54), {1, 6, 3, 3});
    ApotQuantizer alone(3);
    Tensor alone_out = alone.Forward(row);
    EXPECT_FLOAT_EQ(alpha[r], alone.alpha.item<float>()) << "channel " << r;
    std::vector<float> a = alone_out.ToVector<float>(), b = out.ToVector<float>();
    for (size_t i = 0; i < a.size(); ++i) EXPECT_FLOAT_EQ(b[r * 54 + i], a[i]) << "channel " << r << " value " << i;
  }
  EXPECT_NE(alpha[1], alpha[0]);  // the cubed channel's tails want a wider threshold
}

// Note [APoT's alpha at the start]: the threshold the first weights get
// reconstructs them at least as well as the paper's 3 and its neighbours.
TEST(Apot, StartingThresholdMinimizesTheError) {
  Generator gen(3);
  Tensor w = Normal({16, 8, 3, 3}, 0.01, 0.05, &gen);
  ApotQuantizer q(3);
  NoGradGuard no_grad;
  q.Forward(w);
  double a = q.alpha.item<float>();
  EXPECT_GE(a, 1.0);
  EXPECT_LE(a, 6.0);
  auto error = [&](double alpha) {
    ApotQuantizer other(3);
    FillInplace(other.alpha, alpha);
    FillInplace(other.initialized, 1);
    Tensor mean = Mean(w);
    return Sum(Square(Sub(other.Forward(w), Sub(w, mean)))).item<float>();
  };
  EXPECT_LE(error(a), error(3.0) * (1 + 1e-6));
  EXPECT_LE(error(a), error(a + 0.05) * (1 + 1e-6));
  EXPECT_LE(error(a), error(a - 0.05) * (1 + 1e-6));
}

std::shared_ptr<nn::Sequential> SmallCnn(Generator* gen) {
  Conv2dOptions pad{.padding = {1, 1}};
  return std::make_shared<nn::Sequential>(
      std::make_shared<nn::Conv2d>(3, 16, 3, pad, false, gen), std::make_shared<nn::BatchNorm2d>(16),
      std::make_shared<nn::ReLU>(), std::make_shared<nn::Conv2d>(16, 16, 3, pad, false, gen),
      std::make_shared<nn::BatchNorm2d>(16), std::make_shared<nn::ReLU>(), std::make_shared<nn::Flatten>(),
      std::make_shared<nn::Linear>(16 * 6 * 6, 5, true, gen));
}

// Trains a few SGD steps with APoT weights (alpha moves), then converts.
std::shared_ptr<IntegerModel> TrainAndConvert(nn::Sequential& net, const std::string& policy, Generator* gen,
                                              Tensor* x_eval, double* alpha_moved) {
  PrepareReport r = PrepareQat(net, *MixedPrecisionPolicy::Parse(policy));
  auto* apot = dynamic_cast<ApotQuantizer*>(r.rows[1].weight.get());
  EXPECT_NE(apot, nullptr);
  net.Train();
  nn::SGD opt(ParameterGroups(net, 1.0), {.lr = 0.05, .momentum = 0.9});
  Tensor x = Normal({32, 3, 6, 6}, 0, 1, gen);
  std::vector<int64_t> labels(32);
  for (int i = 0; i < 32; ++i) labels[i] = i % 5;
  Tensor y = Tensor::FromVector(labels, {32});
  std::vector<float> start;
  for (int step = 0; step < 15; ++step) {
    opt.ZeroGrad();
    Backward(CrossEntropy(net.Forward(x), y));
    if (step == 0) start = apot->alpha.ToVector<float>();
    opt.Step();
  }
  std::vector<float> end = apot->alpha.ToVector<float>();
  *alpha_moved = 0;  // the largest move of a channel's threshold
  for (size_t c = 0; c < end.size(); ++c) *alpha_moved = std::max<double>(*alpha_moved, std::abs(end[c] - start[c]));
  net.Eval();
  *x_eval = Normal({64, 3, 6, 6}, 0, 1, gen);
  return Convert(net);
}

TEST(Apot, IntegerModelComputesWhatTrainingComputed) {
  for (int bits : {4, 3, 2}) {
    SCOPED_TRACE(bits);
    Generator gen(10 + bits);
    auto net = SmallCnn(&gen);
    Tensor x;
    double moved = 0;
    auto q = TrainAndConvert(*net, absl::StrCat("default ", bits, " 8 apot\nfirst_last_8bit off\n"), &gen, &x, &moved);
    EXPECT_GT(moved, 1e-4) << "alpha did not train";
    NoGradGuard no_grad;
    Tensor ref = net->Forward(x), got = q->Forward(x);
    std::vector<float> a = got.ToVector<float>(), b = ref.ToVector<float>();
    double max_diff = 0, spread = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      max_diff = std::max(max_diff, static_cast<double>(std::abs(a[i] - b[i])));
      spread = std::max(spread, static_cast<double>(std::abs(b[i])));
    }
    std::printf("APoT W%dA8: max |integer - fake-quant| %.3g of max |logit| %.3g\n", bits, max_diff, spread);
    EXPECT_LE(max_diff, 0.02 * spread);  // Note [Conversion tolerance] in tests/quant/convert_test.cc
    // The weights hold codebook codes only: 4 bits in qint8 ([-10, 10]), 3 and 2 in qint4.
    std::vector<int32_t> levels = ApotQuantizer::Levels(bits);
    std::set<int32_t> allowed;
    for (int32_t c : levels) allowed.insert(c), allowed.insert(-c);
    int checked = 0;
    for (const IntegerNode& n : q->nodes()) {
      if (!n.weight.defined() || n.weight.dtype() == DType::kF32) continue;
      EXPECT_EQ(n.weight.dtype(), bits == 4 ? DType::kQInt8 : DType::kQInt4) << n.name;
      EXPECT_EQ(n.weight.qparams().quant_max, levels.back()) << n.name;
      std::set<int32_t> seen;
      for (int32_t v : n.weight.IntRepr()) seen.insert(v);
      for (int32_t v : seen) EXPECT_TRUE(allowed.count(v)) << n.name << ": " << v;
      EXPECT_GE(seen.size() + 4, allowed.size()) << n.name;  // the levels are used
      ++checked;
    }
    EXPECT_EQ(checked, 3);
  }
}

TEST(Apot, FourBitCodesAreStoredAsIndicesIntoACodebook) {
  Generator gen(20);
  auto net = SmallCnn(&gen);
  Tensor x;
  double moved = 0;
  auto q = TrainAndConvert(*net, "default 4 8 apot\nfirst_last_8bit off\n", &gen, &x, &moved);
  int64_t expected = 0;
  for (const IntegerNode& n : q->nodes()) {
    if (!n.weight.defined()) continue;
    std::set<int32_t> distinct;
    for (int32_t v : n.weight.IntRepr()) distinct.insert(v);
    expected += (n.weight.numel() + 1) / 2 + static_cast<int64_t>(distinct.size()) +
                4 * static_cast<int64_t>(n.weight.qparams().scales.size()) + (n.bias.defined() ? 4 * n.bias.numel() : 0);
  }
  EXPECT_EQ(q->Bytes(), expected);
  EXPECT_NE(q->Summary().find(" codebook("), std::string::npos) << q->Summary();  // what //apps:inspect prints
  std::string path = TempPath("apot.qmodel");
  ASSERT_TRUE(q->Save(path).ok());
  auto file = LoadSafetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const Tensor& book = file->tensors.at("3.weight_codebook");
  EXPECT_EQ(book.dtype(), DType::kI8);
  EXPECT_LE(book.numel(), 15);
  EXPECT_EQ(file->tensors.at("3.weight").dtype(), DType::kU8);
  EXPECT_EQ(file->tensors.at("3.weight").numel(), (16 * 16 * 9 + 1) / 2);
  auto loaded = IntegerModel::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  for (size_t i = 0; i < q->nodes().size(); ++i) {
    const IntegerNode &a = q->nodes()[i], &b = (*loaded)->nodes()[i];
    if (!a.weight.defined()) continue;
    EXPECT_EQ(a.weight.dtype(), b.weight.dtype()) << a.name;
    EXPECT_EQ(a.weight.IntRepr(), b.weight.IntRepr()) << a.name;
  }
  NoGradGuard no_grad;
  EXPECT_EQ((*loaded)->Forward(x).ToVector<float>(), q->Forward(x).ToVector<float>());

  // A codebook out of order, and an index past its end, are refused by name.
  auto rewrite = [&](const std::string& key, Tensor t) {
    TensorMap tensors = file->tensors;
    tensors[key] = t;
    std::string bad = TempPath("apot_bad.qmodel");
    EXPECT_TRUE(SaveSafetensors(bad, tensors, file->metadata).ok());
    auto r = IntegerModel::Load(bad);
    EXPECT_FALSE(r.ok());
    return r.ok() ? std::string() : std::string(r.status().message());
  };
  std::vector<int8_t> reversed = book.ToVector<int8_t>();
  std::reverse(reversed.begin(), reversed.end());
  EXPECT_NE(rewrite("3.weight_codebook", Tensor::FromVector(reversed, {book.numel()})).find("not ascending"),
            std::string::npos);
  std::vector<uint8_t> indices = file->tensors.at("3.weight").ToVector<uint8_t>();
  indices[0] = 0xFF;
  std::string message = rewrite("3.weight", Tensor::FromVector(indices, {static_cast<int64_t>(indices.size())}));
  EXPECT_NE(message.find("outside its codebook"), std::string::npos) << message;
}

TEST(Apot, PolicyNamesItAndEightBitLayersUseLsq) {
  Generator gen(30);
  auto net = SmallCnn(&gen);
  PrepareReport r = PrepareQat(*net, *MixedPrecisionPolicy::Parse("default 3 4 apot\n"));
  ASSERT_EQ(r.rows.size(), 3u);
  EXPECT_NE(dynamic_cast<LsqQuantizer*>(r.rows[0].weight.get()), nullptr);  // first layer: 8 bits
  auto* apot = dynamic_cast<ApotQuantizer*>(r.rows[1].weight.get());
  ASSERT_NE(apot, nullptr);
  EXPECT_EQ(apot->alpha.numel(), 16);  // one threshold per output channel, as the LSQ weights
  EXPECT_EQ(dynamic_cast<LsqQuantizer*>(r.rows[0].weight.get())->scale.numel(), 16);
  EXPECT_NE(dynamic_cast<LsqQuantizer*>(r.rows[1].input.get()), nullptr);  // activations stay uniform
  EXPECT_NE(dynamic_cast<LsqQuantizer*>(r.rows[2].weight.get()), nullptr);  // last layer: 8 bits
  EXPECT_NE(QuantizerNames().find("apot"), std::string::npos);
}

}  // namespace
}  // namespace quanta::quant
