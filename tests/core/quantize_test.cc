// quantize, dequantize, requantize and fake_quantize against hand-computed
// values at the range edges (ties go to even), per tensor and per channel, and
// fake quantization's STE, EWGS and LSQ gradients against their formulas.
#include <tuple>

#include "autograd/autograd.h"
#include "backends/cpu/cpu_backend.h"
#include "core/ops.h"
#include "gtest/gtest.h"

namespace quanta {
namespace {

Tensor F(const std::vector<float>& v, const Shape& s) { return Tensor::FromVector<float>(v, s); }

TEST(Quantize, PerTensorSymmetricQint8) {
  // x / 0.5 = -129, -128.5, 0.5, 1.5, 2.5, 127, 127.5, 200.
  Tensor x = F({-64.5f, -64.25f, 0.25f, 0.75f, 1.25f, 63.5f, 63.75f, 100}, {8});
  Tensor q = Quantize(x, DType::kQInt8, QuantParams::PerTensor(0.5, 0));
  EXPECT_EQ(q.IntRepr(), (std::vector<int32_t>{-128, -128, 0, 2, 2, 127, 127, 127}));
  EXPECT_EQ(Dequantize(q).ToVector<float>(), (std::vector<float>{-64, -64, 0, 1, 1, 63.5f, 63.5f, 63.5f}));
}

TEST(Quantize, AffineQuint8AndQint4) {
  // x / 0.125 = -128.5, -128, 0, 0.5, 127, 127.5; + 128.
  Tensor x = F({-16.0625f, -16, 0, 0.0625f, 15.875f, 15.9375f}, {6});
  Tensor q = Quantize(x, DType::kQUInt8, QuantParams::PerTensor(0.125, 128));
  EXPECT_EQ(q.IntRepr(), (std::vector<int32_t>{0, 0, 128, 128, 255, 255}));
  EXPECT_EQ(Dequantize(q).ToVector<float>(), (std::vector<float>{-16, -16, 0, 0, 15.875f, 15.875f}));
  // qint4, packed two a byte: x / 0.25 = -8.5, -8, 1.5, 7, 7.5, 20.
  Tensor x4 = F({-2.125f, -2, 0.375f, 1.75f, 1.875f, 5}, {6});
  Tensor q4 = Quantize(x4, DType::kQInt4, QuantParams::PerTensor(0.25, 0));
  EXPECT_EQ(q4.IntRepr(), (std::vector<int32_t>{-8, -8, 2, 7, 7, 7}));
  EXPECT_EQ(q4.storage()->bytes(), 3u);
  // Any bit width inside a container: 3-bit values [-4, 3] in qint8.
  Tensor q3 = Quantize(x4, DType::kQInt8, QuantParams::PerTensor(0.25, 0).WithRange(-4, 3));
  EXPECT_EQ(q3.IntRepr(), (std::vector<int32_t>{-4, -4, 2, 3, 3, 3}));
  // 2 bits: [-2, 1].
  Tensor q2 = Quantize(x4, DType::kQInt4, QuantParams::PerTensor(1.0, 0).WithRange(-2, 1));
  EXPECT_EQ(q2.IntRepr(), (std::vector<int32_t>{-2, -2, 0, 1, 1, 1}));
}

TEST(Quantize, PerChannelAndRequantize) {
  Tensor x = F({1.5f, 1.5f, -2.5f, 100}, {2, 2});
  QuantParams p = QuantParams::PerChannel({1.0, 0.5}, {0, 1}, /*axis=*/1);
  Tensor q = Quantize(x, DType::kQInt8, p);
  // channel 0: 1.5 -> 2, -2.5 -> -2 (even); channel 1: 1.5 / 0.5 + 1 = 4, 200 + 1 -> 127.
  EXPECT_EQ(q.IntRepr(), (std::vector<int32_t>{2, 4, -2, 127}));
  EXPECT_EQ(Dequantize(q).ToVector<float>(), (std::vector<float>{2, 1.5f, -2, 63}));
  Tensor r = Requantize(Quantize(F({1.5f, -2.5f}, {2}), DType::kQInt8, QuantParams::PerTensor(0.5, 0)),
                        DType::kQInt4, QuantParams::PerTensor(1.0, 0));
  EXPECT_EQ(r.IntRepr(), (std::vector<int32_t>{2, -2}));
  try {
    Quantize(x, DType::kQInt4, QuantParams::PerTensor(1, 0).WithRange(-16, 15));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "quantize: range [-16, 15] does not fit qint4 [-8, 7]");
  }
}

// Contiguous inputs take the run loop (Note [Fake-quant runs]), strided ones
// per tensor the per-tensor runs (Note [Per-tensor runs]), strided ones per
// channel the general loop: all give the same integers, ties and clamping
// included.
TEST(Quantize, RunLoopEqualsTheStridedLoop) {
  Generator gen(4);
  Tensor x = Mul(Round(Mul(Normal({6, 40}, 0, 3, &gen), 4.0)), 0.25);  // many exact ties at scale 0.5
  Tensor strided = x.Transpose(0, 1);                                    // (40, 6), not contiguous
  ASSERT_FALSE(strided.is_contiguous());
  for (DType dtype : {DType::kQInt8, DType::kQUInt8}) {
    QuantParams tensor = QuantParams::PerTensor(0.5, dtype == DType::kQUInt8 ? 100 : 3);
    EXPECT_EQ(Quantize(strided, dtype, tensor).IntRepr(), Quantize(strided.Contiguous(), dtype, tensor).IntRepr());
    std::vector<double> scales(6);
    for (int i = 0; i < 6; ++i) scales[i] = 0.05 * (i + 1);
    QuantParams channel = QuantParams::PerChannel(scales, std::vector<int64_t>(6, 0), /*axis=*/1);
    EXPECT_EQ(Quantize(strided, dtype, channel).IntRepr(), Quantize(strided.Contiguous(), dtype, channel).IntRepr());
  }
}

// The three loops of quantize and dequantize on one value: per-tensor runs
// (strided, one scale), the general loop (the same strided view with per-channel
// parameters that are all equal) and the channel runs (contiguous), over the
// layouts integer models use: NCHW images read into channels-last (a batch of 3
// and of 1, whose size-1 batch dim keeps a nonzero stride in the spread
// parameters), and a channels-last activation subsampled at stride 2 (a ResNet
// shortcut). cpu::QuantizeGeneralLoops counts the calls that took the general
// loop: the per-channel ones, not the per-tensor ones.
TEST(Quantize, PerTensorRunsEqualTheGeneralLoop) {
  Generator gen(5);
  Tensor nchw = Mul(Round(Mul(Normal({3, 5, 9, 7}, 0, 20, &gen), 4.0)), 0.25);  // ties at scale 0.5, and clamping
  Tensor images = nchw.Permute({0, 2, 3, 1});                                     // read NCHW, write NHWC
  Tensor image = nchw.Narrow(0, 1, 1).Contiguous().Permute({0, 2, 3, 1});         // one image, read NCHW
  Tensor sub = nchw.Permute({0, 2, 3, 1}).Contiguous().Permute({0, 3, 1, 2}).Slice(2, 0, 9, 2).Slice(3, 0, 7, 2);
  // Planes of 23 x 29 = 667 values: runs longer than the 256-value chunks that
  // dense reads with strided writes are quantized in, and not a multiple of them.
  Tensor large = Mul(Round(Mul(Normal({1, 3, 23, 29}, 0, 20, &gen), 4.0)), 0.25).Permute({0, 2, 3, 1});
  for (DType dtype : {DType::kQInt8, DType::kQUInt8}) {
    int64_t z = dtype == DType::kQUInt8 ? 100 : 3;
    QuantParams tensor = QuantParams::PerTensor(0.5, z);
    for (const Tensor& x : {images, image, sub, large}) {
      SCOPED_TRACE(std::string(Name(dtype)) + " " + ShapeToString(x.shape()));
      ASSERT_FALSE(x.is_contiguous());
      int axis = 1;
      QuantParams channel = QuantParams::PerChannel(std::vector<double>(x.size(axis), 0.5),
                                                    std::vector<int64_t>(x.size(axis), z), axis);
      const size_t general = cpu::QuantizeGeneralLoops();
      Tensor runs = Quantize(x, dtype, tensor);
      EXPECT_EQ(cpu::QuantizeGeneralLoops(), general) << "per-tensor quantize took the general loop";
      EXPECT_EQ(runs.IntRepr(), Quantize(x, dtype, channel).IntRepr());
      EXPECT_EQ(cpu::QuantizeGeneralLoops(), general + 1) << "per-channel quantize of a strided view: the general loop";
      EXPECT_EQ(runs.IntRepr(), Quantize(x.Contiguous(), dtype, tensor).IntRepr());
      // Dequantize a strided view of the integers (per-tensor runs) and its
      // contiguous copy (channel runs) against its integers read one by one
      // (IntRepr), times the scale: exact at scale 0.5.
      Tensor q = Quantize(nchw.Permute({0, 2, 3, 1}).Contiguous(), dtype, tensor).Permute({0, 3, 1, 2}).Slice(2, 0, 9, 2);
      ASSERT_FALSE(q.is_contiguous());
      std::vector<float> want;
      for (int32_t i : q.IntRepr()) want.push_back(0.5f * static_cast<float>(i - z));
      const size_t before_dequantize = cpu::QuantizeGeneralLoops();
      EXPECT_EQ(Dequantize(q).ToVector<float>(), want);
      EXPECT_EQ(cpu::QuantizeGeneralLoops(), before_dequantize) << "per-tensor dequantize took the general loop";
      EXPECT_EQ(Dequantize(q.Contiguous()).ToVector<float>(), want);
    }
  }
}

TEST(FakeQuantize, ForwardIsQuantizeThenDequantize) {
  Generator gen(1);
  Tensor x = Normal({4, 3, 5}, 0, 2, &gen);
  QuantParams p = QuantParams::PerChannel({0.0625, 0.125, 0.25}, {0, 3, -2}, 1);
  Tensor want = Dequantize(Quantize(x, DType::kQInt8, p.WithRange(-8, 7)));
  FakeQuantOptions o{.quant_min = -8, .quant_max = 7, .axis = 1};
  Tensor got = FakeQuantize(x, F({0.0625f, 0.125f, 0.25f}, {3}), F({0, 3, -2}, {3}), o);
  EXPECT_EQ(got.ToVector<float>(), want.ToVector<float>());
}

TEST(FakeQuantize, SteEwgsAndLsqGradients) {
  // scale 0.5, zero point 0, range [-4, 3]: x / s = -5 (below), -1.2, 0.7, 3.8 (rounds to 4: above), 2.6.
  std::vector<float> xv = {-2.5f, -0.6f, 0.35f, 1.9f, 1.3f};
  Tensor g = F({1, -2, 3, 1, -1}, {5});
  auto run = [&](FakeQuantGradient mode, double delta, std::vector<float>* gx, float* gs, float* gz) {
    Tensor x = F(xv, {5}).SetRequiresGrad();
    Tensor s = F({0.5f}, {1}).SetRequiresGrad();
    Tensor z = F({0}, {1}).SetRequiresGrad();
    FakeQuantOptions o{.quant_min = -4, .quant_max = 3, .gradient = mode, .ewgs_delta = delta, .lsq_grad_scale = 0.25};
    Tensor y = FakeQuantize(x, s, z, o);
    EXPECT_EQ(y.ToVector<float>(), (std::vector<float>{-2, -0.5f, 0.5f, 1.5f, 1.5f}));
    Backward(y, g);
    *gx = x.grad().ToVector<float>();
    *gs = s.grad().item<float>();
    *gz = z.grad().item<float>();
  };
  std::vector<float> gx;
  float gs, gz;
  run(FakeQuantGradient::kSte, 0, &gx, &gs, &gz);
  EXPECT_EQ(gx, (std::vector<float>{0, -2, 3, 0, -1}));  // STE with the clipping mask
  // LSQ: inside round(x/s) - x/s: -1 + 1.2 = 0.2, 1 - 0.7 = 0.3, 3 - 2.6 = 0.4; below -4, above 3.
  // sum g * d = 1 * -4 + -2 * 0.2 + 3 * 0.3 + 1 * 3 + -1 * 0.4 = -0.9, times 0.25.
  EXPECT_NEAR(gs, -0.9 * 0.25, 1e-6);
  // Zero point: -s where clipped: (1 + 1) * -0.5.
  EXPECT_NEAR(gz, -1.0, 1e-6);
  run(FakeQuantGradient::kEwgs, 0.5, &gx, &gs, &gz);
  // EWGS: g (1 + delta sign(g) (x/s - round(x/s))) inside.
  EXPECT_NEAR(gx[1], -2 * (1 + 0.5 * -1 * (-1.2 + 1)), 1e-6);
  EXPECT_NEAR(gx[2], 3 * (1 + 0.5 * 1 * (0.7 - 1)), 1e-6);
  EXPECT_NEAR(gx[4], -1 * (1 + 0.5 * -1 * (2.6 - 3)), 1e-6);
  EXPECT_EQ(gx[0], 0);
  EXPECT_EQ(gx[3], 0);
}

TEST(FakeQuantize, PerChannelScaleGradientsSumPerChannel) {
  Tensor x = F({0.3f, 0.3f, 0.3f, 0.3f}, {2, 2}).SetRequiresGrad();
  Tensor s = F({1.0f, 0.25f}, {2}).SetRequiresGrad();
  Tensor z = F({0, 0}, {2});
  Tensor y = FakeQuantize(x, s, z, {.quant_min = -8, .quant_max = 7, .axis = 1});
  Backward(Sum(y));
  // Channel 0: round(0.3) - 0.3 = -0.3, twice; channel 1: round(1.2) - 1.2 = -0.2, twice.
  std::vector<float> gs = s.grad().ToVector<float>();
  EXPECT_NEAR(gs[0], -0.6, 1e-6);
  EXPECT_NEAR(gs[1], -0.4, 1e-6);
}

TEST(QuantizedMatmul, HandValues) {
  // a = 0.5 * ([130 126 128; 132 128 124] - 128) = [1 -1 0; 2 0 -2]
  Tensor a = Tensor::FromQuantized({130, 126, 128, 132, 128, 124}, {2, 3}, DType::kQUInt8, QuantParams::PerTensor(0.5, 128));
  // b columns: scale 0.25 and 1: b = [0.25*4 1*1; 0.25*-8 1*2; 0.25*0 1*3] = [1 1; -2 2; 0 3]
  Tensor b = Tensor::FromQuantized({4, 1, -8, 2, 0, 3}, {3, 2}, DType::kQInt8,
                                   QuantParams::PerChannel({0.25, 1.0}, {0, 0}, /*axis=*/1));
  Tensor bias = F({0.5f, -1}, {2});
  // a @ b = [1*1 + -1*-2, 1*1 + -1*2; 2*1 + -2*0, 2*1 + -2*3] = [3 -1; 2 -4]; + bias.
  EXPECT_EQ(QuantizedMatmul(a, b, bias).ToVector<float>(), (std::vector<float>{3.5f, -2, 2.5f, -5}));
  QuantParams out = QuantParams::PerTensor(0.5, 10);
  Tensor q = QuantizedMatmul(a, b, bias, DType::kQInt8, &out);
  EXPECT_EQ(q.IntRepr(), (std::vector<int32_t>{17, 6, 15, 0}));  // real / 0.5 + 10; 2.5 / 0.5 = 5 exactly
  EXPECT_EQ(Dequantize(q).ToVector<float>(), (std::vector<float>{3.5f, -2, 2.5f, -5}));
}

TEST(QuantizedMatmul, Int4WeightsPackUnpackExactly) {
  Generator gen(4);
  Tensor w = Normal({16, 6}, 0, 1, &gen);
  QuantParams p = QuantParams::PerChannel({0.3, 0.2, 0.25, 0.4, 0.5, 0.1}, std::vector<int64_t>(6, 0), 1);
  Tensor w4 = Quantize(w, DType::kQInt4, p);
  EXPECT_EQ(w4.storage()->bytes(), 48u);  // 96 values, two a byte
  Tensor w8 = UnpackQInt4(w4);
  EXPECT_EQ(w8.dtype(), DType::kQInt8);
  EXPECT_EQ(w8.IntRepr(), w4.IntRepr());
  EXPECT_EQ(w8.qparams().quant_min, -8);
  Tensor back = PackQInt4(w8);
  EXPECT_EQ(back.IntRepr(), w4.IntRepr());
  EXPECT_EQ(back.qparams(), w4.qparams());
  EXPECT_THROW(PackQInt4(Quantize(Full({1}, 100.0), DType::kQInt8, QuantParams::PerTensor(1, 0))), Error);
  // A matmul with packed int4 weights equals the one with the same values in int8.
  Tensor a = Quantize(Uniform({5, 16}, 0, 1, &gen), DType::kQUInt8, QuantParams::PerTensor(1.0 / 255, 0));
  EXPECT_EQ(QuantizedMatmul(a, w4).ToVector<float>(), QuantizedMatmul(a, w8).ToVector<float>());
}

TEST(QuantizedConv2d, EqualsTheFloatConvolutionOfTheDequantizedOperands) {
  Generator gen(9);
  Conv2dOptions o;
  o.stride[0] = 2;
  o.padding[0] = o.padding[1] = 1;
  o.groups = 2;
  Tensor x = Quantize(Uniform({2, 4, 7, 6}, -1, 2, &gen), DType::kQUInt8, QuantParams::PerTensor(3.0 / 255, 85));
  std::vector<double> scales = {0.01, 0.02, 0.015, 0.03, 0.005, 0.02};
  Tensor w = Quantize(Normal({6, 2, 3, 3}, 0, 0.5, &gen), DType::kQInt8,
                      QuantParams::PerChannel(scales, std::vector<int64_t>(6, 0), 0));
  Tensor bias = Normal({6}, 0, 1, &gen);
  Tensor want = Conv2d(Dequantize(x, DType::kF64), Dequantize(w, DType::kF64), bias.To(DType::kF64), o);
  std::vector<double> got = QuantizedConv2d(x, w, bias, o).ToVector<double>(), ref = want.ToVector<double>();
  ASSERT_EQ(got.size(), ref.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], ref[i], 1e-5 * (1 + std::abs(ref[i]))) << i;
  // Requantized output: Quantize of the exact result (ties aside).
  QuantParams po = QuantParams::PerTensor(0.02, -5);
  std::vector<int32_t> q = QuantizedConv2d(x, w, bias, o, DType::kQInt8, &po).IntRepr();
  std::vector<int32_t> qref = Quantize(want, DType::kQInt8, po).IntRepr();
  int differ = 0;
  for (size_t i = 0; i < q.size(); ++i) differ += q[i] != qref[i];
  EXPECT_LE(differ, 1);
  // Packed int4 weights give the same result as their int8 unpacking.
  Tensor w4 = Quantize(Normal({6, 2, 3, 3}, 0, 0.5, &gen), DType::kQInt4,
                       QuantParams::PerChannel({0.1, 0.1, 0.2, 0.2, 0.3, 0.3}, std::vector<int64_t>(6, 0), 0));
  EXPECT_EQ(QuantizedConv2d(x, w4, Tensor(), o).ToVector<float>(),
            QuantizedConv2d(x, UnpackQInt4(w4), Tensor(), o).ToVector<float>());
}

// fake_quantize_backward's attributes for the tests below: a 4-bit range
// [-8, 7], STE or EWGS (delta 0.3), LSQ's gradient scale 0.5.
OpAttrs BackwardAttrs(bool ewgs) {
  OpAttrs at;
  at.quant_min = -8;
  at.quant_max = 7;
  at.fake_quant_gradient = ewgs ? 1 : 0;
  at.ewgs_delta = 0.3;
  at.lsq_grad_scale = 0.5;
  return at;
}

// The fused backward pass against the same formulas written with ops.
TEST(FakeQuantize, FusedBackwardEqualsTheComposition) {
  Generator gen(3);
  Tensor x = Normal({3, 4, 5}, 0, 1.5, &gen, DType::kF64);
  Tensor s = Uniform({3, 4, 5}, 0.1, 0.4, &gen, DType::kF64);
  Tensor z = Round(Uniform({3, 4, 5}, -2, 2, &gen, DType::kF64));
  Tensor g = Normal({3, 4, 5}, 0, 1, &gen, DType::kF64);
  for (bool ewgs : {false, true}) {
    OpAttrs at = BackwardAttrs(ewgs);
    std::array<Tensor, 3> fused = FakeQuantizeBackward(g, x, s, z, at);
    Tensor xs = Div(x, s), r = Round(xs), q = Add(r, z);
    Tensor below = Lt(q, -8).To(DType::kF64), above = Gt(q, 7).To(DType::kF64);
    Tensor inside = Sub(Sub(Ones({3, 4, 5}, DType::kF64), below), above);
    Tensor gx = Mul(g, inside);
    if (ewgs) {
      Tensor sign = Sub(Gt(g, 0).To(DType::kF64), Lt(g, 0).To(DType::kF64));
      gx = Mul(gx, Add(Mul(Mul(sign, Sub(xs, r)), 0.3), 1.0));
    }
    Tensor gs = Mul(Mul(g, Add(Mul(inside, Sub(r, xs)), Add(Mul(below, Sub(Scalar(-8, DType::kF64), z)),
                                                              Mul(above, Sub(Scalar(7, DType::kF64), z))))), 0.5);
    Tensor gz = Mul(Mul(g, Add(below, above)), Neg(s));
    for (auto [got, want] : {std::pair{fused[0], gx}, std::pair{fused[1], gs}, std::pair{fused[2], gz}}) {
      std::vector<double> a = got.ToVector<double>(), b = want.ToVector<double>();
      for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-12) << i;
    }
  }
}

// Gradients left out of `needed` come back undefined (no pass wrote them); the
// ones asked for equal the full pass's, over dense runs and over a strided x
// (the fallback, which writes the rest into scratch).
TEST(FakeQuantize, BackwardWritesOnlyTheGradientsAskedFor) {
  Generator gen(5);
  Tensor x = Normal({4, 6, 5}, 0, 1.5, &gen);
  Tensor s = Uniform({1, 6, 1}, 0.1, 0.4, &gen).Expand({4, 6, 5});
  Tensor z = Round(Uniform({1, 6, 1}, -2, 2, &gen)).Expand({4, 6, 5});
  Tensor g = Normal({4, 6, 5}, 0, 1, &gen);
  Tensor xt = Normal({5, 6, 4}, 0, 1.5, &gen).Permute({2, 1, 0});  // strided
  for (bool ewgs : {false, true}) {
    OpAttrs at = BackwardAttrs(ewgs);
    for (const Tensor& input : {x, xt}) {
      std::array<Tensor, 3> all = FakeQuantizeBackward(g, input, s, z, at);
      for (std::array<bool, 3> needed : {std::array<bool, 3>{true, false, false}, {true, true, false},
                                          {false, true, false}, {false, true, true}, {true, false, true},
                                          {false, false, true}}) {
        std::array<Tensor, 3> got = FakeQuantizeBackward(g, input, s, z, at, needed);
        for (int i = 0; i < 3; ++i) {
          ASSERT_EQ(got[i].defined(), needed[i]) << i;
          if (needed[i]) {
            EXPECT_EQ(got[i].ToVector<float>(), all[i].ToVector<float>()) << i << " ewgs " << ewgs;
          }
        }
      }
    }
  }
  EXPECT_THROW(FakeQuantizeBackward(g, x, s, z, OpAttrs{}, {false, false, false}), Error);
}

// Note [Fake-quant parameter sums]: the scale and zero-point gradients summed
// per channel in the kernel's pass equal the per-element gradients summed
// afterwards (f64 operands: to 1e-12), per tensor and per channel, NCHW and
// channels-last, for every combination autograd asks for; the sum is the same
// to the bit at 1 and 2 threads (fixed blocks). The per-element pass rounds each
// product with the gradient scale (0.3 here) to f32 before summing and the
// fused one multiplies once: on f32 operands the two differ in the last bits,
// which shows the fused pass is the one that ran.
TEST(FakeQuantize, SummedParameterGradientsEqualTheSumsOfThePass) {
  Generator gen(7);
  const Shape shape = {4, 6, 40, 50};  // 48,000 values: two fixed blocks of 32,768, the first ending mid-run
  Tensor x = Normal(shape, 0, 1.5, &gen, DType::kF64), g = Normal(shape, 0, 1, &gen, DType::kF64);
  Tensor sc = Uniform({6}, 0.1, 0.4, &gen, DType::kF64), zc = Round(Uniform({6}, -2, 2, &gen, DType::kF64));
  const int before = GetNumThreads();
  for (int axis : {-1, 1, 0}) {
    const int64_t channels = axis >= 0 ? shape[axis] : 1;
    Tensor s = axis == 0 ? Uniform({4}, 0.1, 0.4, &gen, DType::kF64) : axis == 1 ? sc : sc.Narrow(0, 0, 1);
    Tensor z = axis == 0 ? Round(Uniform({4}, -2, 2, &gen, DType::kF64)) : axis == 1 ? zc : zc.Narrow(0, 0, 1);
    Shape along(4, 1);
    if (axis >= 0) along[axis] = channels;
    Tensor ss = s.View(along).Expand(shape), zs = z.View(along).Expand(shape);
    for (bool ewgs : {false, true}) {
      OpAttrs at = BackwardAttrs(ewgs);
      at.dims = {axis};
      std::array<Tensor, 3> full = FakeQuantizeBackward(g, x, ss, zs, at);
      std::vector<int64_t> dims;
      for (int d = 0; d < 4; ++d) {
        if (d != axis) dims.push_back(d);
      }
      for (bool channels_last : {false, true}) {
        Tensor xl = channels_last ? x.ChannelsLast() : x, gl = channels_last ? g.ChannelsLast() : g;
        for (std::array<bool, 3> needed : {std::array<bool, 3>{true, true, false}, {true, true, true},
                                            {false, true, false}, {false, true, true}}) {
          SCOPED_TRACE(::testing::Message() << "axis " << axis << " ewgs " << ewgs << " channels-last "
                                            << channels_last << " zero " << needed[2] << " x " << needed[0]);
          std::vector<std::array<Tensor, 3>> got;
          for (int threads : {1, 2}) {
            SetNumThreads(threads);
            got.push_back(FakeQuantizeBackwardSummed(gl, xl, s, z, at, needed));
          }
          for (int i = 0; i < 3; ++i) {
            ASSERT_EQ(got[0][i].defined(), needed[i]) << i;
            if (!needed[i]) continue;
            EXPECT_EQ(got[0][i].ToVector<double>(), got[1][i].ToVector<double>()) << i;
            if (i == 0) {
              EXPECT_EQ(got[0][0].ToVector<double>(), full[0].ToVector<double>());
              continue;
            }
            ASSERT_EQ(got[0][i].shape(), Shape{channels});
            std::vector<double> a = got[0][i].ToVector<double>(), b = Sum(full[i], dims).ToVector<double>();
            for (int64_t c = 0; c < channels; ++c) EXPECT_NEAR(a[c], b[c], 1e-12 * (1 + std::abs(b[c]))) << i << " " << c;
          }
        }
      }
    }
  }
  SetNumThreads(before);
  OpAttrs at = BackwardAttrs(false);
  at.dims = {1};
  Tensor x32 = x.To(DType::kF32), g32 = g.To(DType::kF32);
  Tensor ss = sc.To(DType::kF32).View({1, 6, 1, 1}).Expand(shape), zs = zc.To(DType::kF32).View({1, 6, 1, 1}).Expand(shape);
  at.lsq_grad_scale = 0.3;
  std::vector<float> fused =
      FakeQuantizeBackwardSummed(g32, x32, sc.To(DType::kF32), zc.To(DType::kF32), at, {true, true, false})[1].ToVector<float>();
  std::vector<float> after = Sum(FakeQuantizeBackward(g32, x32, ss, zs, at, {true, true, false})[1], {0, 2, 3}).ToVector<float>();
  EXPECT_NE(fused, after) << "the per-element pass and the fused sum agreeing to the bit on every channel "
                             "suggests the fused pass did not run";
  for (int c = 0; c < 6; ++c) EXPECT_NEAR(fused[c], after[c], 1e-4 * (1 + std::abs(after[c]))) << c;
}

// A channels-last activation (QAT on channels-last images) is fake-quantized in
// runs over its memory (Note [Fake-quant runs]) and stays channels-last,
// forward and backward; the values equal those of its contiguous copy, per
// tensor and per channel (axis 1: the innermost dim in memory), ties included.
TEST(FakeQuantize, ChannelsLastStaysChannelsLast) {
  Generator gen(6);
  Tensor nchw = Mul(Round(Mul(Normal({2, 5, 6, 7}, 0, 3, &gen), 4.0)), 0.25);  // ties at scale 0.5, clamping
  Tensor x = nchw.ChannelsLast();
  Tensor g = Normal({2, 5, 6, 7}, 0, 1, &gen).ChannelsLast();
  ASSERT_TRUE(x.is_channels_last() && !x.is_contiguous());
  Tensor s1 = F({0.5f}, {1}), z1 = F({1}, {1});
  Tensor sc = F({0.5f, 0.25f, 1, 0.125f, 0.5f}, {5}), zc = F({0, 1, -1, 2, 0}, {5});
  for (auto [scale, zero, axis] : {std::tuple{s1, z1, -1}, std::tuple{sc, zc, 1}}) {
    SCOPED_TRACE(axis);
    FakeQuantOptions o{.quant_min = -8, .quant_max = 7, .axis = axis};
    Tensor y = FakeQuantize(x, scale, zero, o);
    EXPECT_TRUE(y.is_channels_last() && !y.is_contiguous());
    EXPECT_EQ(y.ToVector<float>(), FakeQuantize(nchw, scale, zero, o).ToVector<float>());
  }
  Tensor s = Uniform({1, 5, 1, 1}, 0.1, 0.4, &gen).Expand({2, 5, 6, 7});
  Tensor z = Round(Uniform({1, 5, 1, 1}, -2, 2, &gen)).Expand({2, 5, 6, 7});
  for (bool ewgs : {false, true}) {
    OpAttrs at = BackwardAttrs(ewgs);
    std::array<Tensor, 3> cl = FakeQuantizeBackward(g, x, s, z, at);
    std::array<Tensor, 3> want = FakeQuantizeBackward(g.Contiguous(), nchw, s, z, at);
    for (int i = 0; i < 3; ++i) {
      EXPECT_TRUE(cl[i].is_channels_last() && !cl[i].is_contiguous()) << i;
      EXPECT_EQ(cl[i].ToVector<float>(), want[i].ToVector<float>()) << i << " ewgs " << ewgs;
    }
  }
}

}  // namespace
}  // namespace quanta
