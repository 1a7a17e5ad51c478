// Block-scaled minifloats (BlockQuantize / BlockDequantize, Note [Block scaling]
// in core/minifloat.h): blocks worked by hand for MXFP8, MXFP4, NVFP4 and
// DeepSeek-V3's tiles and blocks, torchao's reference implementation from the
// committed fixture testdata/block_quant.txt (tools/gen_block_fixtures.py), the
// gradient of the fake-quantized form, and the errors.
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "autograd/autograd.h"
#include "core/minifloat.h"
#include "core/ops.h"
#include "core/tensor.h"
#include "gtest/gtest.h"

namespace quanta {
namespace {

Tensor F(const std::vector<float>& v, const Shape& shape) { return Tensor::FromVector<float>(v, shape); }
std::vector<float> Values(const Tensor& t) { return t.To(DType::kF32).ToVector<float>(); }

// A 1 x 32 block: the given values first, zeros after.
Tensor Block32(std::vector<float> head) {
  head.resize(32, 0.0f);
  return F(head, {1, 32});
}

TEST(BlockQuant, MxFp8ByHand) {
  // amax 3: shared exponent floor(log2 3) - 8 (E4M3's largest exponent) = -7, so
  // the scale is 2^-7 (E8M0 code 120); 3 -> 384 = 1.100b x 2^8, 0.3 -> 38.4 -> 40
  // (spacing 4 in [32, 64)), giving 0.3125.
  BlockQuantized q = BlockQuantize(Block32({3.0f, 1.0f, -0.5f, 0.3f}), BlockFormat::Mx(DType::kF8E4M3));
  EXPECT_EQ(q.codes.dtype(), DType::kF8E4M3);
  EXPECT_EQ(q.scales.shape(), (Shape{1, 1}));
  EXPECT_EQ(q.scales.dtype(), DType::kF8E8M0);
  EXPECT_EQ(Values(q.scales)[0], 0x1p-7f);
  std::vector<float> codes = Values(q.codes);
  EXPECT_EQ(codes[0], 384.0f);
  EXPECT_EQ(codes[3], 40.0f);
  std::vector<float> y = Values(BlockDequantize(q));
  EXPECT_EQ(y[0], 3.0f);
  EXPECT_EQ(y[1], 1.0f);
  EXPECT_EQ(y[2], -0.5f);
  EXPECT_EQ(y[3], 0.3125f);
  EXPECT_EQ(y[4], 0.0f);
}

TEST(BlockQuant, MxFp4ByHandSaturatesAboveTheScale) {
  // amax 6.5: floor(log2 6.5) - 2 = 0, scale 1; 6.5 is past FP4's 6 and saturates
  // (the MX spec's floor leaves such headroom); 0.7 -> 0.5 (below the midpoint
  // 0.75); -2.2 -> -2; 2.5 is halfway between 2 and 3 and goes to 2 (even code).
  BlockQuantized q = BlockQuantize(Block32({6.5f, 1.0f, 0.7f, -2.2f, 2.5f}), BlockFormat::Mx(DType::kF4E2M1));
  EXPECT_EQ(Values(q.scales)[0], 1.0f);
  std::vector<float> y = Values(BlockDequantize(q));
  EXPECT_EQ(y[0], 6.0f);
  EXPECT_EQ(y[1], 1.0f);
  EXPECT_EQ(y[2], 0.5f);
  EXPECT_EQ(y[3], -2.0f);
  EXPECT_EQ(y[4], 2.0f);
  EXPECT_EQ(StorageBytes(q.codes.dtype(), q.codes.numel()), 16);  // 32 codes, two a byte
  EXPECT_DOUBLE_EQ(q.format.BitsPerElement(), 4.25);
}

TEST(BlockQuant, Nvfp4ByHand) {
  // Tensor amax 12: g = 12 / (448 * 6). Block 0 (amax 12): 12 / 6 / g = 448, an
  // E4M3 value, so its scale is 448 g = 2 and 12 -> 6. Block 1 (amax 3):
  // 3 / 6 / g = 112 = 1.11b x 2^6, scale 0.5, 3 -> 6 and 0.4 -> 0.8 -> 1.
  // Block 2 is all zeros: scale 0, codes 0.
  std::vector<float> v(48, 0.0f);
  v[0] = 12, v[1] = -5, v[16] = 3, v[17] = 0.4f;
  BlockQuantized q = BlockQuantize(F(v, {48}), BlockFormat::Nvfp4());
  EXPECT_FLOAT_EQ(q.tensor_scale.item<float>(), 12.0f / 2688);
  std::vector<float> s = Values(q.scales);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0], 448.0f);
  EXPECT_EQ(s[1], 112.0f);
  EXPECT_EQ(s[2], 0.0f);
  std::vector<float> y = Values(BlockDequantize(q));
  EXPECT_FLOAT_EQ(y[0], 12.0f);
  EXPECT_FLOAT_EQ(y[1], -4.0f);  // -5 / 2 = -2.5: halfway, to the even code -2
  EXPECT_FLOAT_EQ(y[16], 3.0f);
  EXPECT_FLOAT_EQ(y[17], 0.5f);
  for (int i = 32; i < 48; ++i) EXPECT_EQ(y[i], 0.0f);
  EXPECT_DOUBLE_EQ(q.format.BitsPerElement(), 4.5);
}

TEST(BlockQuant, DeepSeekTilesAndBlocks) {
  // 1 x 4 tiles: scale amax / 448 in f32, so each tile's largest value is exact
  // and the others are within E4M3's half step (2^-4 relative).
  Tensor x = F({1, 2, 3, -7, 0.01f, 0.02f, 0.03f, 0.05f}, {2, 4});
  BlockQuantized q = BlockQuantize(x, BlockFormat::Tile(4));
  EXPECT_EQ(q.scales.dtype(), DType::kF32);
  std::vector<float> s = Values(q.scales);
  EXPECT_EQ(s, (std::vector<float>{7.0f / 448, 0.05f / 448}));
  std::vector<float> y = Values(BlockDequantize(q)), xs = Values(x);
  EXPECT_EQ(y[3], -7.0f);
  EXPECT_FLOAT_EQ(y[7], 0.05f);
  for (int i = 0; i < 8; ++i) EXPECT_LE(std::fabs(y[i] - xs[i]), std::fabs(xs[i]) / 16) << i;
  // 2 x 2 blocks of a 4 x 4 matrix (batched twice): each block's scale from its own four values.
  std::vector<float> m(32);
  for (int b = 0; b < 2; ++b) {
    for (int r = 0; r < 4; ++r) {
      for (int c = 0; c < 4; ++c) m[b * 16 + r * 4 + c] = static_cast<float>((b + 1) * (1 + r / 2 * 2 + c / 2) * (r + c % 2 + 1));
    }
  }
  BlockQuantized blocks = BlockQuantize(F(m, {2, 4, 4}), BlockFormat::Block(2));
  ASSERT_EQ(blocks.scales.shape(), (Shape{2, 2, 2}));
  std::vector<float> bs = Values(blocks.scales);
  for (int b = 0; b < 2; ++b) {
    for (int i = 0; i < 2; ++i) {
      for (int j = 0; j < 2; ++j) {
        float amax = 0;
        for (int r = 2 * i; r < 2 * i + 2; ++r) {
          for (int c = 2 * j; c < 2 * j + 2; ++c) amax = std::max(amax, m[b * 16 + r * 4 + c]);
        }
        EXPECT_EQ(bs[b * 4 + i * 2 + j], amax / 448) << b << " " << i << " " << j;
      }
    }
  }
  EXPECT_DOUBLE_EQ(BlockFormat::Tile().BitsPerElement(), 8 + 32.0 / 128);
}

// torchao's MX (FLOOR scales) and NVFP4 (two-level) quantization, value for value.
TEST(BlockQuant, MatchesTorchao) {
  std::ifstream in("tests/core/testdata/block_quant.txt");
  ASSERT_TRUE(in) << "missing tests/core/testdata/block_quant.txt (tools/gen_block_fixtures.py)";
  std::string line, kind, element;
  std::vector<float> x, scales, y;
  float tensor_scale = 1;
  int formats = 0;
  auto hex_floats = [](std::istringstream& s) {
    std::vector<float> v;
    std::string h;
    while (s >> h) v.push_back(BitsToFloat(static_cast<uint32_t>(std::stoul(h, nullptr, 16))));
    return v;
  };
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream s(line);
    std::string tag;
    s >> tag;
    if (tag == "format") {
      s >> kind >> element;
    } else if (tag == "x") {
      x = hex_floats(s);
    } else if (tag == "scales") {
      scales.clear();
      for (float v; s >> v;) scales.push_back(v);
    } else if (tag == "tensor_scale") {
      s >> tensor_scale;
    } else if (tag == "y") {
      y = hex_floats(s);
      DType d = DType::kF4E2M1;
      for (DType c : {DType::kF8E4M3, DType::kF8E5M2, DType::kF6E2M3, DType::kF6E3M2, DType::kF4E2M1}) {
        if (element == Name(c)) d = c;
      }
      BlockFormat f = kind == "mx" ? BlockFormat::Mx(d) : BlockFormat::Nvfp4();
      BlockQuantized q = BlockQuantize(F(x, {4, 128}), f);
      EXPECT_FLOAT_EQ(q.tensor_scale.item<float>(), tensor_scale) << kind << " " << element;
      EXPECT_EQ(Values(q.scales), scales) << kind << " " << element;
      std::vector<float> got = Values(BlockDequantize(q));
      ASSERT_EQ(got.size(), y.size());
      int differ = 0;
      for (size_t i = 0; i < y.size(); ++i) {
        // NVFP4: torchao multiplies the two scales in another order; allow an f32 ulp.
        bool same = kind == "mx" ? got[i] == y[i] : std::fabs(got[i] - y[i]) <= 2e-7f * std::fabs(y[i]);
        if (!same && differ++ < 5) ADD_FAILURE() << kind << " " << element << " element " << i << ": " << got[i] << " against " << y[i];
      }
      ++formats;
    }
  }
  EXPECT_EQ(formats, 6);
}

TEST(BlockQuant, FakeQuantizePassesTheGradientStraightThrough) {
  Generator gen(3);
  Tensor x = Normal({2, 64}, 0, 1, &gen);
  x.SetRequiresGrad();
  Tensor y = BlockFakeQuantize(x, BlockFormat::Mx(DType::kF4E2M1));
  EXPECT_EQ(Values(y), Values(BlockDequantize(BlockQuantize(x, BlockFormat::Mx(DType::kF4E2M1)))));
  Tensor w = Normal({2, 64}, 0, 1, &gen);
  Backward(Sum(Mul(y, w)));
  EXPECT_EQ(Values(x.grad()), Values(w));
}

TEST(BlockQuant, ErrorsNameTheProblem) {
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  std::string m = message([] { BlockQuantize(Zeros({3, 50}), BlockFormat::Mx(DType::kF8E4M3)); });
  EXPECT_NE(m.find("block_quantize: the last dim of [3, 50] (50) is not a multiple of the block's 32 columns"),
            std::string::npos) << m;
  m = message([] { BlockQuantize(Zeros({3, 128}), BlockFormat::Block()); });
  EXPECT_NE(m.find("dim 0 of [3, 128] (3) is not a multiple of the block's 128 rows"), std::string::npos) << m;
  m = message([] { BlockQuantize(Zeros({32}), BlockFormat{DType::kF8E8M0, 1, 32, DType::kF8E8M0}); });
  EXPECT_NE(m.find("elements f8_e8m0 are not a minifloat element type"), std::string::npos) << m;
  m = message([] { BlockQuantize(Zeros({32}, DType::kI32), BlockFormat::Mx(DType::kF8E4M3)); });
  EXPECT_NE(m.find("needs a floating input, got i32[32]"), std::string::npos) << m;
  BlockQuantized q = BlockQuantize(Zeros({64}), BlockFormat::Mx(DType::kF8E4M3));
  q.format = BlockFormat::Mx(DType::kF8E5M2);
  m = message([&] { BlockDequantize(q); });
  EXPECT_NE(m.find("are not one f8_e5m2 1x32 f8_e8m0 tensor"), std::string::npos) << m;
}

}  // namespace
}  // namespace quanta
