// FP8 training (quant/fp8.h): the tile and block groupings against
// BlockQuantize on the groups cut out by hand, padding that changes no group's
// scale, the three GEMMs of a prepared Linear (forward, input gradient, weight
// gradient) against the same products computed from quantized operands, a
// convolution's groups along channels, and a small training run.
#include "quant/fp8.h"

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "core/minifloat.h"
#include "core/ops.h"
#include "gtest/gtest.h"
#include "nn/layers.h"
#include "nn/optim.h"

namespace quanta::quant {
namespace {

std::vector<float> Values(const Tensor& t) { return t.To(DType::kF32).Contiguous().ToVector<float>(); }
Tensor FakeQuant(const Tensor& x, const BlockFormat& f) { return BlockDequantize(BlockQuantize(x, f)); }

void ExpectNear(const Tensor& got, const Tensor& want, double rtol, const std::string& what) {
  std::vector<float> g = Values(got), w = Values(want);
  ASSERT_EQ(g.size(), w.size()) << what;
  for (size_t i = 0; i < g.size(); ++i) {
    ASSERT_LE(std::fabs(g[i] - w[i]), 1e-6 + rtol * std::fabs(w[i])) << what << " element " << i;
  }
}

TEST(Fp8, TilesAlongTheReductionDim) {
  Generator gen(1);
  // A Linear input: 1 x 128 tiles along the last dim, one scale each.
  Tensor x = Normal({3, 256}, 0, 2, &gen);
  EXPECT_EQ(Values(Fp8QuantizeTiles(x, -1, 128, DType::kF8E4M3)), Values(FakeQuant(x, BlockFormat::Tile(128))));
  // 200 = 128 + 72: the second tile is zero-padded, which leaves its amax, so it
  // equals quantizing its 72 values as one tile.
  Tensor y = Normal({2, 200}, 0, 1, &gen);
  std::vector<float> got = Values(Fp8QuantizeTiles(y, 1, 128, DType::kF8E4M3));
  std::vector<float> head = Values(FakeQuant(y.Narrow(1, 0, 128).Contiguous(), BlockFormat::Tile(128)));
  std::vector<float> tail = Values(FakeQuant(y.Narrow(1, 128, 72).Contiguous(), BlockFormat::Tile(72)));
  for (int r = 0; r < 2; ++r) {
    for (int k = 0; k < 200; ++k) {
      float want = k < 128 ? head[r * 128 + k] : tail[r * 72 + k - 128];
      ASSERT_EQ(got[r * 200 + k], want) << r << " " << k;
    }
  }
  // A convolution's (N, C, H, W): one tile per pixel across its 16 channels.
  Tensor c = Normal({2, 16, 3, 3}, 0, 1, &gen);
  std::vector<float> q = Values(Fp8QuantizeTiles(c, 1, 128, DType::kF8E4M3)), cv = Values(c);
  for (int n = 0; n < 2; ++n) {
    for (int p = 0; p < 9; ++p) {
      float amax = 0;
      for (int ch = 0; ch < 16; ++ch) amax = std::max(amax, std::fabs(cv[(n * 16 + ch) * 9 + p]));
      for (int ch = 0; ch < 16; ++ch) {
        int i = (n * 16 + ch) * 9 + p;
        float s = amax / 448;
        float want = DecodeMiniFloat(MiniFloatOf(DType::kF8E4M3), EncodeMiniFloat(MiniFloatOf(DType::kF8E4M3), cv[i] / s)) * s;
        ASSERT_EQ(q[i], want) << n << " " << ch << " " << p;
      }
    }
  }
}

TEST(Fp8, WeightBlocks) {
  Generator gen(2);
  // (200, 3, 3, 3) is a (200, 27) matrix: blocks of 128 x 27, the second padded.
  Tensor w = Normal({200, 3, 3, 3}, 0, 1, &gen);
  std::vector<float> got = Values(Fp8QuantizeBlocks(w, 128, DType::kF8E4M3));
  Tensor m = w.Reshape({200, 27});
  std::vector<float> top = Values(FakeQuant(m.Narrow(0, 0, 128).Contiguous(), BlockFormat{DType::kF8E4M3, 128, 27, DType::kF32}));
  std::vector<float> bottom = Values(FakeQuant(m.Narrow(0, 128, 72).Contiguous(), BlockFormat{DType::kF8E4M3, 72, 27, DType::kF32}));
  for (int i = 0; i < 200 * 27; ++i) {
    ASSERT_EQ(got[i], i < 128 * 27 ? top[i] : bottom[i - 128 * 27]) << i;
  }
}

// A three-layer MLP: the middle Linear is FP8, the first and last stay f32.
std::shared_ptr<nn::Sequential> Mlp(uint64_t seed) {
  Generator gen(seed);
  return std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(8, 256, true, &gen), std::make_shared<nn::ReLU>(),
                                          std::make_shared<nn::Linear>(256, 192, true, &gen), std::make_shared<nn::ReLU>(),
                                          std::make_shared<nn::Linear>(192, 3, true, &gen));
}

TEST(Fp8, PreparedLinearRunsItsThreeGemmsOnQuantizedInputs) {
  auto net = Mlp(3);
  Fp8Report r = PrepareFp8Training(*net, Fp8Recipe{});
  EXPECT_EQ(r.fp8_layers, std::vector<std::string>{"2"});
  EXPECT_EQ(r.kept_layers, (std::vector<std::string>{"0", "4"}));
  EXPECT_EQ(r.ToString(), "fp8 training: 1 layers in FP8; f32: 0, 4");
  nn::Linear* mid = nullptr;
  for (auto& [name, m] : net->NamedModules()) {
    if (name == "2") mid = dynamic_cast<nn::Linear*>(m);
  }
  ASSERT_NE(mid, nullptr);
  Generator gen(4);
  Tensor h = Normal({5, 256}, 0, 1, &gen).SetRequiresGrad();
  Tensor v = Normal({5, 192}, 0, 1e-3, &gen);  // the output gradient
  Tensor y = mid->Forward(h);
  Backward(Sum(Mul(y, v)));
  Tensor hq = Fp8QuantizeTiles(h.Detach(), 1, 128, DType::kF8E4M3);
  Tensor wq = Fp8QuantizeBlocks(mid->weight.Detach(), 128, DType::kF8E4M3);
  Tensor vq = Fp8QuantizeTiles(v, 1, 128, DType::kF8E4M3);
  // Forward: y = hq wq^T + b. Input gradient: vq wq. Weight gradient: vq^T hq.
  ExpectNear(y.Detach(), Add(Matmul(hq, wq.Transpose(0, 1)), mid->bias.Detach()), 1e-5, "forward");
  ExpectNear(h.grad(), Matmul(vq, wq), 1e-5, "input gradient");
  ExpectNear(mid->weight.grad(), Matmul(vq.Transpose(0, 1), hq), 1e-5, "weight gradient");
  // The gradients did go through FP8: against the unquantized v they differ.
  std::vector<float> exact = Values(Matmul(v, wq)), got = Values(h.grad());
  double diff = 0;
  for (size_t i = 0; i < got.size(); ++i) diff = std::max(diff, static_cast<double>(std::fabs(got[i] - exact[i])));
  EXPECT_GT(diff, 0);
  // Taken off again, the layer computes in f32.
  RemoveFp8Training(*net);
  EXPECT_EQ(mid->input_quant, nullptr);
  EXPECT_EQ(Values(mid->Forward(h.Detach())), Values(quanta::Linear(h.Detach(), mid->weight, mid->bias)));
  EXPECT_THROW(PrepareFp8Training(*net, Fp8Recipe{.forward = DType::kF6E2M3}), Error);
  PrepareFp8Training(*net, Fp8Recipe{});
  EXPECT_THROW(PrepareFp8Training(*net, Fp8Recipe{}), Error);  // does not stack
}

// The ablation with f32 gradients: the forward GEMM reads FP8 operands, the
// backward GEMMs read the output gradient as it came (only the saved
// activation and weight are FP8).
TEST(Fp8, F32GradientsLeaveTheOutputGradientAlone) {
  auto net = Mlp(3);
  PrepareFp8Training(*net, Fp8Recipe{.gradient = DType::kF32});
  nn::Linear* mid = nullptr;
  for (auto& [name, m] : net->NamedModules()) {
    if (name == "2") mid = dynamic_cast<nn::Linear*>(m);
  }
  ASSERT_NE(mid, nullptr);
  EXPECT_NE(mid->input_quant, nullptr);
  EXPECT_FALSE(mid->output_grad_quant);
  Generator gen(4);
  Tensor h = Normal({5, 256}, 0, 1, &gen).SetRequiresGrad();
  Tensor v = Normal({5, 192}, 0, 1e-3, &gen);
  Backward(Sum(Mul(mid->Forward(h), v)));
  Tensor hq = Fp8QuantizeTiles(h.Detach(), 1, 128, DType::kF8E4M3);
  Tensor wq = Fp8QuantizeBlocks(mid->weight.Detach(), 128, DType::kF8E4M3);
  ExpectNear(h.grad(), Matmul(v, wq), 1e-5, "input gradient");
  ExpectNear(mid->weight.grad(), Matmul(v.Transpose(0, 1), hq), 1e-5, "weight gradient");
  RemoveFp8Training(*net);
  EXPECT_EQ(mid->input_quant, nullptr);
  EXPECT_THROW(PrepareFp8Training(*net, Fp8Recipe{.gradient = DType::kBF16}), Error);
}

// A regression MLP trained 150 steps in f32 and in FP8 (E4M3 and E5M2
// gradients) from the same start, on targets with noise of variance 0.25 (the
// loss a perfect fit leaves, as a language model's loss stays far from 0): the
// losses end within 1% of each other.
TEST(Fp8, TrainsLikeF32OnASmallProblem) {
  Generator data_gen(7);
  Tensor x = Normal({2048, 8}, 0, 1, &data_gen);
  Tensor target = Add(Matmul(Tanh(Matmul(x, Normal({8, 3}, 0, 1, &data_gen))), Normal({3, 3}, 0, 1, &data_gen)),
                      Normal({2048, 3}, 0, 0.5, &data_gen));
  auto train = [&](const char* mode) {
    auto net = Mlp(11);
    if (std::string(mode) != "f32") {
      PrepareFp8Training(*net, Fp8Recipe{.gradient = std::string(mode) == "e5m2" ? DType::kF8E5M2 : DType::kF8E4M3});
    }
    nn::SGD opt({{net->Parameters()}}, nn::SgdOptions{.lr = 0.05, .momentum = 0.9});
    double loss = 0;
    for (int step = 0; step < 150; ++step) {
      Tensor l = Mean(Square(Sub(net->Forward(x), target)));
      opt.ZeroGrad();
      Backward(l);
      opt.Step();
      loss = l.item<float>();
    }
    return loss;
  };
  double f32 = train("f32"), e4m3 = train("e4m3"), e5m2 = train("e5m2");
  EXPECT_LT(f32, 0.3) << "the f32 run itself should fit down to the noise";
  std::printf("final loss: f32 %.6f, fp8 e4m3 %.6f (%+.3f%%), e5m2 gradients %.6f (%+.3f%%)\n", f32, e4m3,
              100 * (e4m3 - f32) / f32, e5m2, 100 * (e5m2 - f32) / f32);
  EXPECT_LT(std::fabs(e4m3 - f32) / f32, 0.01) << e4m3 << " against " << f32;
  EXPECT_LT(std::fabs(e5m2 - f32) / f32, 0.01) << e5m2 << " against " << f32;
  EXPECT_NE(e4m3, f32);
}

}  // namespace
}  // namespace quanta::quant
