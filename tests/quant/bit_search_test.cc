// The bit search (quant/bit_search.h): the knapsack against exhaustive search
// over every assignment, the sensitivities of a small network (larger at fewer
// bits, weights restored exactly), and the policy text read back by the parser.
#include <cmath>

#include "core/grad_mode.h"
#include "core/ops.h"
#include "gtest/gtest.h"
#include "nn/layers.h"
#include "quant/bit_search.h"
#include "quant/prepare.h"

namespace quanta::quant {
namespace {

TEST(BitSearch, KnapsackMatchesExhaustiveSearch) {
  Generator gen(1);
  const std::vector<int> cand = {2, 3, 4, 8};
  for (int trial = 0; trial < 6; ++trial) {
    std::vector<LayerSensitivity> layers;
    std::vector<float> counts = Uniform({5}, 50, 2000, &gen).ToVector<float>();
    std::vector<float> scale = Uniform({5}, 0.01, 1, &gen).ToVector<float>();
    for (int l = 0; l < 5; ++l) {
      LayerSensitivity s{.name = "l" + std::to_string(l), .weights = static_cast<int64_t>(counts[l])};
      // Increases that fall with bits, as measured ones do: scale * 4^-b plus noise.
      for (int b : cand) s.loss_increase.push_back(scale[l] * std::pow(4.0, -b) * (1 + 0.3 * l) + 1e-6 * b);
      layers.push_back(s);
    }
    int64_t total = 0;
    for (const auto& l : layers) total += l.weights;
    for (double budget : {2.5, 3.0, 3.7, 5.0}) {
      BitSearchOptions o{.candidates = cand, .budget = budget, .first_last_8bit = false};
      BitSearchResult r = SearchBits(layers, o);
      // Every one of the 4^5 assignments.
      double best = INFINITY;
      for (int code = 0; code < 1024; ++code) {
        int64_t bits = 0;
        double inc = 0;
        for (int l = 0, c = code; l < 5; ++l, c /= 4) {
          bits += layers[l].weights * cand[c % 4];
          inc += layers[l].loss_increase[c % 4];
        }
        if (bits <= std::floor(budget * total)) best = std::min(best, inc);
      }
      EXPECT_NEAR(r.predicted_increase, best, 1e-12) << "trial " << trial << " budget " << budget;
      int64_t used = 0;
      for (int l = 0; l < 5; ++l) used += layers[l].weights * r.bits[l];
      EXPECT_LE(used, std::floor(budget * total));
      EXPECT_NEAR(r.average_bits, static_cast<double>(used) / total, 1e-12);
    }
  }
  std::vector<LayerSensitivity> one = {{.name = "a", .weights = 10, .loss_increase = {1, 0.5, 0.1, 0}}};
  EXPECT_THROW(SearchBits(one, {.candidates = cand, .budget = 1.5, .first_last_8bit = false}), Error);
}

TEST(BitSearch, SensitivitiesFallWithBitsAndWeightsAreRestored) {
  Generator gen(2);
  auto net = std::make_shared<nn::Sequential>(
      std::make_shared<nn::Linear>(16, 64, true, &gen), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(64, 64, true, &gen), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(64, 32, true, &gen), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(32, 4, true, &gen));
  net->Eval();
  Tensor x = Normal({128, 16}, 0, 1, &gen);
  Tensor ref;
  {
    NoGradGuard no_grad;
    ref = net->Forward(x);
  }
  // The squared distance to the float outputs: 0 for the float model itself.
  auto loss = [&] { return Mean(Square(Sub(net->Forward(x), ref))).item<float>(); };
  std::vector<std::vector<float>> before;
  for (const auto& [name, t] : net->NamedParameters()) before.push_back(t->ToVector<float>());
  BitSearchOptions o{.candidates = {2, 3, 4, 8}, .budget = 3.0};
  std::vector<LayerSensitivity> s = MeasureSensitivity(*net, loss, o);
  ASSERT_EQ(s.size(), 4u);
  EXPECT_FALSE(s[0].searched);
  EXPECT_FALSE(s[3].searched);
  for (int l : {1, 2}) {
    ASSERT_EQ(s[l].loss_increase.size(), 4u);
    EXPECT_EQ(s[l].weights, l == 1 ? 64 * 64 : 32 * 64);
    for (int c = 0; c + 1 < 4; ++c) EXPECT_GT(s[l].loss_increase[c], s[l].loss_increase[c + 1]) << s[l].name << " " << c;
    EXPECT_GT(s[l].loss_increase[3], 0);
    EXPECT_LT(s[l].loss_increase[3], 0.01 * s[l].loss_increase[0]);
  }
  size_t k = 0;
  for (const auto& [name, t] : net->NamedParameters()) EXPECT_EQ(t->ToVector<float>(), before[k++]) << name;

  BitSearchResult r = SearchBits(s, o);
  EXPECT_LE(r.average_bits, 3.0);
  EXPECT_EQ(r.bits[0], 8);
  EXPECT_EQ(r.bits[3], 8);
  o.quantizer = "lsq";
  std::string text = BitPolicyText(s, r, o);
  auto p = MixedPrecisionPolicy::Parse(text);
  ASSERT_TRUE(p.ok()) << p.status() << "\n" << text;
  EXPECT_FALSE(p->first_last_8bit);
  for (size_t l = 0; l < s.size(); ++l) {
    QConfig c = p->For(s[l].name, l == 0 || l + 1 == s.size());
    EXPECT_EQ(c.weight_bits, r.bits[l]) << s[l].name << "\n" << text;
    EXPECT_EQ(c.act_bits, 8);
    EXPECT_EQ(c.kind, QuantizerKind::kLsq);
  }
}

}  // namespace
}  // namespace quanta::quant
