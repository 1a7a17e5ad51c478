// oneDNN's matmul and conv2d held equal to the reference kernels on random
// inputs. Tolerance: normalized MSE (sum (got-ref)^2 / sum ref^2) per dtype.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <thread>

#include "absl/strings/str_join.h"
#include "backends/cpu/cpu_backend.h"
#include "core/backend.h"
#include "core/ops.h"
#include "gtest/gtest.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace quanta {
namespace {

double NormalizedMse(const Tensor& got, const Tensor& ref) {
  std::vector<double> g = got.ToVector<double>(), r = ref.ToVector<double>();
  EXPECT_EQ(g.size(), r.size());
  double err = 0, norm = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    err += (g[i] - r[i]) * (g[i] - r[i]);
    norm += r[i] * r[i];
  }
  return norm == 0 ? err : err / norm;
}

double Tolerance(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 1e-10;  // f32 accumulation vs f64
    case DType::kBF16: return 1e-4;  // output rounded to 8 mantissa bits (2^-9 relative)
    case DType::kF16: return 1e-5;
    default: return 0;
  }
}

template <typename F>
void ExpectMatchesReference(F&& op, DType dtype, const char* what) {
  Tensor fast = op();
  Tensor ref;
  {
    cpu::ReferenceModeGuard guard;
    ref = op();
  }
  ASSERT_EQ(fast.shape(), ref.shape()) << what;
  EXPECT_LE(NormalizedMse(fast, ref), Tolerance(dtype)) << what << " " << Name(dtype);
}

TEST(OneDnn, MatmulMatchesReference) {
  Generator gen(1);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    Tensor a = Normal({3, 37, 64}, 0, 1, &gen).To(dtype);
    Tensor b = Normal({64, 29}, 0, 1, &gen).To(dtype);
    Tensor bb = Normal({3, 1, 64, 29}, 0, 1, &gen).To(dtype);
    ExpectMatchesReference([&] { return Matmul(a, b); }, dtype, "batch x matrix");
    ExpectMatchesReference([&] { return Matmul(a, bb); }, dtype, "broadcast batch");
    ExpectMatchesReference([&] { return Matmul(a.Transpose(-2, -1).Transpose(-2, -1).Narrow(1, 5, 20), b); },
                           dtype, "narrowed rows");
    ExpectMatchesReference([&] { return Matmul(b.Transpose(0, 1), a.Select(0, 1).Transpose(0, 1)); },
                           dtype, "both transposed");
    ExpectMatchesReference([&] { return Matmul(a.Slice(2, 0, 64, 2), b.Slice(0, 0, 64, 2)); }, dtype,
                           "strided inner dim");
  }
  Tensor h = Normal({16, 32}, 0, 1, &gen).To(DType::kF16);
  Tensor hw = Normal({32, 8}, 0, 1, &gen).To(DType::kF16);
  ExpectMatchesReference([&] { return Matmul(h, hw); }, DType::kF16, "f16");
}

TEST(OneDnn, Conv2dMatchesReference) {
  Generator gen(2);
  struct Case {
    Shape x, w;
    int64_t stride, padding, dilation, groups;
    bool bias;
  };
  const Case cases[] = {
      {{2, 3, 12, 12}, {8, 3, 3, 3}, 1, 1, 1, 1, true},
      {{2, 4, 11, 9}, {6, 4, 3, 3}, 2, 1, 1, 1, false},
      {{1, 4, 13, 13}, {4, 4, 3, 3}, 1, 2, 2, 1, true},
      {{2, 8, 10, 10}, {8, 2, 3, 3}, 1, 1, 1, 4, true},   // grouped
      {{1, 6, 9, 9}, {6, 1, 5, 5}, 2, 2, 1, 6, false},    // depthwise
      {{3, 16, 7, 7}, {32, 16, 1, 1}, 1, 0, 1, 1, true},  // pointwise
  };
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (const Case& k : cases) {
      Tensor x = Normal(k.x, 0, 1, &gen).To(dtype);
      Tensor w = Normal(k.w, 0, 0.3, &gen).To(dtype);
      Tensor b = k.bias ? Normal({k.w[0]}, 0, 1, &gen).To(dtype) : Tensor();
      Conv2dOptions o;
      o.stride[0] = o.stride[1] = k.stride;
      o.padding[0] = o.padding[1] = k.padding;
      o.dilation[0] = o.dilation[1] = k.dilation;
      o.groups = k.groups;
      std::string what = x.Describe() + " * " + w.Describe();
      ExpectMatchesReference([&] { return Conv2d(x, w, b, o); }, dtype, what.c_str());
      Tensor gy = Normal(Conv2d(x, w, b, o).shape(), 0, 1, &gen).To(dtype);
      ExpectMatchesReference([&] { return Conv2dBackwardInput(gy, w, x.shape(), o); }, dtype,
                             ("backward input " + what).c_str());
      ExpectMatchesReference([&] { return Conv2dBackwardWeight(gy, x, w.shape(), o); }, dtype,
                             ("backward weight " + what).c_str());
    }
  }
}

// Channels-last activations run oneDNN's NHWC convolutions (no reorders) and
// stay channels-last: forward, backward-input and backward-weight equal the
// NCHW path's and the reference's (which runs them through contiguous copies),
// and oneDNN took every case.
TEST(OneDnn, ChannelsLastConvolutionsMatchNchw) {
  Generator gen(3);
  Backend& cpu = GetBackend(Device::Cpu());
  cpu.ResetFallbackCounts();
  for (int64_t stride : {1, 2}) {
    Tensor x = Normal({4, 16, 10, 10}, 0, 1, &gen), w = Normal({24, 16, 3, 3}, 0, 0.3, &gen), b = Normal({24}, 0, 1, &gen);
    Conv2dOptions o;
    o.stride[0] = o.stride[1] = stride;
    o.padding[0] = o.padding[1] = 1;
    Tensor xc = x.ChannelsLast();
    Tensor y = Conv2d(xc, w, b, o);
    EXPECT_TRUE(y.is_channels_last() && !y.is_contiguous());
    EXPECT_LE(NormalizedMse(y, Conv2d(x, w, b, o)), Tolerance(DType::kF32));
    ExpectMatchesReference([&] { return Conv2d(xc, w, b, o); }, DType::kF32, "channels-last forward");
    Tensor gy = Normal(y.shape(), 0, 1, &gen), gyc = gy.ChannelsLast();
    Tensor gx = Conv2dBackwardInput(gyc, w, x.shape(), o);
    EXPECT_TRUE(gx.is_channels_last() && !gx.is_contiguous());
    EXPECT_LE(NormalizedMse(gx, Conv2dBackwardInput(gy, w, x.shape(), o)), Tolerance(DType::kF32));
    ExpectMatchesReference([&] { return Conv2dBackwardInput(gyc, w, x.shape(), o); }, DType::kF32, "channels-last backward input");
    EXPECT_LE(NormalizedMse(Conv2dBackwardWeight(gyc, xc, w.shape(), o), Conv2dBackwardWeight(gy, x, w.shape(), o)),
              Tolerance(DType::kF32));
    ExpectMatchesReference([&] { return Conv2dBackwardWeight(gyc, xc, w.shape(), o); }, DType::kF32,
                           "channels-last backward weight");
  }
  for (Op op : {Op::kConv2d, Op::kConv2dBackwardInput, Op::kConv2dBackwardWeight}) {
    EXPECT_EQ(cpu.FallbackCount(op), 0) << OpName(op);
  }
}

// Note [Winograd convolutions] (backends/cpu/onednn.cc): f32 3x3 stride-1
// convolutions with 32 or more channels run oneDNN's Winograd kernels on an
// AVX-512 CPU (the count of Winograd primitives rises by the passes that take
// it: forward and backward-data at 32 channels, all three at 64), keep
// channels-last outputs channels-last, and agree with the reference to
// the f32 tolerance (Winograd's transforms add and subtract before the
// products: normalized MSE 1e-14 to 6e-13 on these cases, direct 1e-14 to
// 2e-13, against 1e-10 allowed and about 1 for a misread layout); with the
// option off the same problems build direct primitives.
TEST(OneDnn, WinogradConvolutionsMatchReference) {
  const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
  const bool avx512 = isa == dnnl::cpu_isa::avx512_core || isa == dnnl::cpu_isa::avx512_core_vnni ||
                      isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
  if (!avx512) std::printf("no AVX-512: oneDNN has no Winograd kernels here, every case must run direct\n");
  Generator gen(5);
  Backend& cpu = GetBackend(Device::Cpu());
  cpu.ResetFallbackCounts();
  for (bool winograd : {true, false}) {
    cpu.SetOption("winograd", winograd ? "1" : "0");
    for (int64_t c : {32, 64}) {
      for (bool nhwc : {false, true}) {
        // 9x9 maps: not a tile multiple; batch 3 + winograd: shapes no other test builds.
        Tensor x = Normal({3, c, 9, 9}, 0, 1, &gen), w = Normal({c, c, 3, 3}, 0, 0.1, &gen);
        Tensor b = Normal({c}, 0, 1, &gen);
        if (nhwc) x = x.ChannelsLast();
        Conv2dOptions o;
        o.padding[0] = o.padding[1] = 1;
        const size_t before = cpu::OneDnnWinogradPrimitives();
        Tensor y = Conv2d(x, w, b, o);
        Tensor gy = Normal(y.shape(), 0, 1, &gen);
        if (nhwc) gy = gy.ChannelsLast();
        Tensor gx = Conv2dBackwardInput(gy, w, x.shape(), o);
        Conv2dBackwardWeight(gy, x, w.shape(), o);
        const size_t built = cpu::OneDnnWinogradPrimitives() - before;
        std::string what = std::string(winograd ? "winograd " : "direct ") + x.Describe() + (nhwc ? " nhwc" : "");
        EXPECT_EQ(built, winograd && avx512 ? (c == 64 ? 3u : 2u) : 0u) << what;
        // The benchmarks' report says what ran: the count where Winograd did, why not where it did not.
        const std::string described = cpu::DescribeConvolutions(before);
        if (built > 0) {
          EXPECT_NE(described.find("(" + std::to_string(built) + " Winograd primitives built)"), std::string::npos)
              << described;
        } else {
          EXPECT_EQ(described.rfind("direct (", 0), 0u) << described;
          EXPECT_NE(described.find(winograd ? "only with AVX-512" : "turned off"), std::string::npos) << described;
        }
        EXPECT_EQ(y.is_channels_last(), nhwc) << what;
        EXPECT_EQ(gx.is_channels_last(), nhwc) << what;
        ExpectMatchesReference([&] { return Conv2d(x, w, b, o); }, DType::kF32, ("forward " + what).c_str());
        ExpectMatchesReference([&] { return Conv2dBackwardInput(gy, w, x.shape(), o); }, DType::kF32,
                               ("backward input " + what).c_str());
        ExpectMatchesReference([&] { return Conv2dBackwardWeight(gy, x, w.shape(), o); }, DType::kF32,
                               ("backward weight " + what).c_str());
      }
    }
  }
  cpu.SetOption("winograd", "1");
  EXPECT_THROW(cpu.SetOption("winograd", "yes"), Error);
  for (Op op : {Op::kConv2d, Op::kConv2dBackwardInput, Op::kConv2dBackwardWeight}) {
    EXPECT_EQ(cpu.FallbackCount(op), 0) << OpName(op);
  }
}

// One input channel (a Fashion-MNIST stem): NCHW and NHWC memory coincide, and
// the channel stride of 1 that ChannelsLast() gives asks for a channels-last
// output, as PyTorch's suggest_memory_format does. Forward and backward-weight
// equal the NCHW path's, and oneDNN took them.
TEST(OneDnn, OneChannelInputAsksForChannelsLast) {
  Generator gen(4);
  Backend& cpu = GetBackend(Device::Cpu());
  cpu.ResetFallbackCounts();
  Tensor x = Normal({4, 1, 12, 12}, 0, 1, &gen), w = Normal({16, 1, 3, 3}, 0, 0.3, &gen);
  Conv2dOptions o;
  o.padding[0] = o.padding[1] = 1;
  Tensor xc = x.ChannelsLast();
  ASSERT_TRUE(x.is_contiguous() && !x.suggests_channels_last());
  ASSERT_TRUE(xc.suggests_channels_last() && xc.SharesStorageWith(x));
  Tensor y = Conv2d(xc, w, Tensor(), o), want = Conv2d(x, w, Tensor(), o);
  EXPECT_TRUE(y.is_channels_last() && !y.is_contiguous());
  EXPECT_TRUE(want.is_contiguous());
  EXPECT_LE(NormalizedMse(y, want), Tolerance(DType::kF32));
  Tensor gy = Normal(y.shape(), 0, 1, &gen);
  EXPECT_LE(NormalizedMse(Conv2dBackwardWeight(gy.ChannelsLast(), xc, w.shape(), o), Conv2dBackwardWeight(gy, x, w.shape(), o)),
            Tolerance(DType::kF32));
  for (Op op : {Op::kConv2d, Op::kConv2dBackwardWeight}) EXPECT_EQ(cpu.FallbackCount(op), 0) << OpName(op);
}

// Note [No silent slow path] in core/backend.h: an int8 test holds the fast
// path to the reference only if the fast path ran. Checked when it ends.
class ExpectFastPath {
 public:
  ExpectFastPath() : cpu_(GetBackend(Device::Cpu())) { cpu_.ResetFallbackCounts(); }
  ~ExpectFastPath() {
    for (Op op : {Op::kQuantizedMatmul, Op::kQuantizedConv2d}) {
      EXPECT_EQ(cpu_.FallbackCount(op), 0) << OpName(op) << ": oneDNN refused a case and the reference kernel ran, "
                                           << "so the test compared the reference with itself";
    }
  }

 private:
  Backend& cpu_;
};

// A refused case is counted: weights with a nonzero zero point have no oneDNN form.
TEST(OneDnn, RefusedCasesAreCounted) {
  Backend& cpu = GetBackend(Device::Cpu());
  cpu.ResetFallbackCounts();
  Tensor a = Quantize(Tensor::FromVector<float>({1, 2, 3, 4}, {2, 2}), DType::kQUInt8, QuantParams::PerTensor(0.1, 3));
  Tensor b = Quantize(Tensor::FromVector<float>({1, -1, 2, 0}, {2, 2}), DType::kQInt8, QuantParams::PerTensor(0.05, 2));
  Tensor y = QuantizedMatmul(a, b, Tensor());
  EXPECT_EQ(cpu.FallbackCount(Op::kQuantizedMatmul), 1);
  QuantizedMatmul(a, b, Tensor());
  EXPECT_EQ(cpu.FallbackCount(Op::kQuantizedMatmul), 2);
  // (1, 2; 3, 4) x (1, -1; 2, 0) = (5, -1; 11, -3).
  std::vector<float> v = y.ToVector<float>();
  std::vector<float> want = {5, -1, 11, -3};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(v[i], want[i], 1e-4) << i;  // exact: every value is on its grid
  cpu.ResetFallbackCounts();
  EXPECT_EQ(cpu.FallbackCount(Op::kQuantizedMatmul), 0);
}

// oneDNN's int8 matmul (u8/s8 x s8 with VNNI) against the reference integer
// kernel: f32 outputs agree to f32 rounding; requantized outputs may differ by one
// level where the two round an exact tie differently (f32 vs f64 arithmetic).
TEST(OneDnn, QuantizedMatmulMatchesReference) {
  ExpectFastPath fast_path;
  Generator gen(5);
  for (DType src : {DType::kQUInt8, DType::kQInt8}) {
    for (bool per_channel : {false, true}) {
      for (bool with_bias : {false, true}) {
        int64_t M = 33, K = 70, N = 19;
        Tensor af = Uniform({M, K}, -1, 3, &gen);
        QuantParams pa = src == DType::kQUInt8 ? QuantParams::PerTensor(4.0 / 255, 64) : QuantParams::PerTensor(4.0 / 255, -30);
        Tensor a = Quantize(af, src, pa);
        Tensor bf = Normal({K, N}, 0, 0.2, &gen);
        std::vector<double> scales(N);
        for (int64_t n = 0; n < N; ++n) scales[n] = 0.004 + 0.001 * n;
        QuantParams pb = per_channel ? QuantParams::PerChannel(scales, std::vector<int64_t>(N, 0), 1)
                                     : QuantParams::PerTensor(0.005, 0);
        Tensor b = Quantize(bf, DType::kQInt8, pb);
        Tensor bias = with_bias ? Normal({N}, 0, 1, &gen) : Tensor();
        Tensor fast = QuantizedMatmul(a, b, bias);
        Tensor ref;
        {
          cpu::ReferenceModeGuard guard;
          ref = QuantizedMatmul(a, b, bias);
        }
        EXPECT_LE(NormalizedMse(fast, ref), 1e-12) << Name(src) << " per_channel " << per_channel;
        QuantParams po = QuantParams::PerTensor(0.05, 3);
        std::vector<int32_t> fq = QuantizedMatmul(a, b, bias, DType::kQInt8, &po).IntRepr(), rq;
        {
          cpu::ReferenceModeGuard guard;
          rq = QuantizedMatmul(a, b, bias, DType::kQInt8, &po).IntRepr();
        }
        int differ = 0;
        for (size_t i = 0; i < fq.size(); ++i) {
          EXPECT_LE(std::abs(fq[i] - rq[i]), 1) << i;
          differ += fq[i] != rq[i];
        }
        EXPECT_LE(differ, static_cast<int>(fq.size() / 100)) << Name(src) << " per_channel " << per_channel;
      }
    }
  }
}

TEST(OneDnn, QuantizedConv2dMatchesReference) {
  ExpectFastPath fast_path;
  Generator gen(6);
  struct Case {
    Shape x, w;
    int64_t stride, padding, groups;
  };
  for (const Case& k : {Case{{2, 8, 9, 9}, {16, 8, 3, 3}, 1, 1, 1}, Case{{1, 8, 10, 8}, {8, 4, 3, 3}, 2, 1, 2},
                        Case{{2, 16, 6, 6}, {32, 16, 1, 1}, 1, 0, 1}}) {
    for (DType src : {DType::kQUInt8, DType::kQInt8}) {
      Conv2dOptions o;
      o.stride[0] = o.stride[1] = k.stride;
      o.padding[0] = o.padding[1] = k.padding;
      o.groups = k.groups;
      QuantParams px = src == DType::kQUInt8 ? QuantParams::PerTensor(3.0 / 255, 40) : QuantParams::PerTensor(3.0 / 255, 7);
      Tensor x = Quantize(Uniform(k.x, -0.5, 2, &gen), src, px);
      std::vector<double> scales(k.w[0]);
      for (size_t i = 0; i < scales.size(); ++i) scales[i] = 0.003 + 0.0005 * i;
      Tensor w = Quantize(Normal(k.w, 0, 0.2, &gen), DType::kQInt8,
                          QuantParams::PerChannel(scales, std::vector<int64_t>(k.w[0], 0), 0));
      Tensor bias = Normal({k.w[0]}, 0, 1, &gen);
      Tensor fast = QuantizedConv2d(x, w, bias, o), ref;
      QuantParams po = QuantParams::PerTensor(0.03, -4);
      std::vector<int32_t> fq = QuantizedConv2d(x, w, bias, o, DType::kQInt8, &po).IntRepr(), rq;
      {
        cpu::ReferenceModeGuard guard;
        ref = QuantizedConv2d(x, w, bias, o);
        rq = QuantizedConv2d(x, w, bias, o, DType::kQInt8, &po).IntRepr();
      }
      EXPECT_LE(NormalizedMse(fast, ref), 1e-12) << x.Describe() << " * " << w.Describe();
      int differ = 0;
      for (size_t i = 0; i < fq.size(); ++i) {
        EXPECT_LE(std::abs(fq[i] - rq[i]), 1) << i;
        differ += fq[i] != rq[i];
      }
      EXPECT_LE(differ, static_cast<int>(fq.size() / 100) + 1) << x.Describe();
    }
  }
}

// Note [int8 convolution implementations] (backends/cpu/onednn.cc): every
// implementation oneDNN offers for an int8 convolution (each name; where two
// share one, the first of them), forced in turn, gives
// the bits the rule's choice gives (u8 and f32 outputs; a u8 residual, an f32
// one, none; s8 and u8 sources), so which one runs cannot change a result; and
// the rule takes jit_int8 for kernels larger than 1x1 over at most 64 input
// channels (brgconv, oneDNN's first there, is 8-28% slower on ResNet-20's
// layers) and oneDNN's first otherwise (these cases' 1x1 convolutions are of
// two images: the one-image exception is the next test). Without VNNI oneDNN offers no
// jit_int8 (AVX-512 VNNI) kernels: the bits are still compared.
TEST(OneDnn, Int8ConvolutionImplementationsAgreeBitForBit) {
  Generator gen(12);
  Backend& cpu = GetBackend(Device::Cpu());
  cpu.ResetFallbackCounts();
  struct Case {
    Shape x, w;
    int64_t stride, padding;
    int residual;  // 0: none, 1: f32, 2: quint8
    DType src;
    int64_t zero_point;  // the source's: oneDNN 2.6's brgconv takes only 0 (a ReLU's output)
  };
  const size_t rule_before = cpu::OneDnnRuleInt8Choices();
  int compared = 0, with_choices = 0;
  for (const Case& k : {Case{{2, 16, 10, 10}, {16, 16, 3, 3}, 1, 1, 2, DType::kQUInt8, 0},
                        Case{{2, 16, 10, 10}, {16, 16, 3, 3}, 1, 1, 0, DType::kQUInt8, 0},
                        Case{{3, 16, 9, 9}, {32, 16, 3, 3}, 2, 1, 0, DType::kQUInt8, 0},
                        Case{{1, 64, 6, 6}, {64, 64, 3, 3}, 1, 1, 1, DType::kQUInt8, 0},
                        Case{{1, 64, 6, 6}, {64, 64, 3, 3}, 1, 1, 0, DType::kQUInt8, 0},
                        Case{{2, 16, 10, 10}, {16, 16, 3, 3}, 1, 1, 0, DType::kQUInt8, 40},
                        Case{{2, 16, 10, 10}, {16, 16, 3, 3}, 1, 1, 0, DType::kQInt8, -20},
                        Case{{1, 72, 6, 6}, {24, 72, 3, 3}, 1, 1, 0, DType::kQUInt8, 0},
                        Case{{2, 32, 5, 5}, {48, 32, 1, 1}, 1, 0, 0, DType::kQUInt8, 0},
                        Case{{2, 32, 5, 5}, {48, 32, 1, 1}, 1, 0, 2, DType::kQUInt8, 0}}) {
    SCOPED_TRACE(::testing::Message() << ShapeToString(k.x) << " * " << ShapeToString(k.w) << " residual " << k.residual);
    Conv2dOptions o;
    o.stride[0] = o.stride[1] = k.stride;
    o.padding[0] = o.padding[1] = k.padding;
    Tensor x = Quantize(Uniform(k.x, -0.5, 2, &gen), k.src, QuantParams::PerTensor(2.5 / 255, k.zero_point))
                   .ChannelsLast();
    const int64_t O = k.w[0];
    std::vector<double> scales(O);
    for (int64_t i = 0; i < O; ++i) scales[i] = 0.002 + 0.0001 * i;
    Tensor w = Quantize(Normal(k.w, 0, 0.15, &gen), DType::kQInt8, QuantParams::PerChannel(scales, std::vector<int64_t>(O, 0), 0));
    Tensor bias = Normal({O}, 0, 0.5, &gen);
    const int64_t oh = (k.x[2] + 2 * k.padding - k.w[2]) / k.stride + 1;
    Tensor r = Normal({k.x[0], O, oh, oh}, 0, 1, &gen);
    if (k.residual == 2) r = Quantize(r, DType::kQUInt8, QuantParams::PerTensor(0.02, 110));
    IntegerPostOps post{.residual = k.residual == 0 ? Tensor() : r.ChannelsLast(), .relu = true};
    QuantParams po = QuantParams::PerTensor(0.03, 12);
    auto run = [&] {
      return std::make_pair(QuantizedConv2d(x, w, bias, o, DType::kQUInt8, &po, post).IntRepr(),
                            QuantizedConv2d(x, w, bias, o, DType::kF32, nullptr, post).ToVector<float>());
    };
    cpu.SetOption("int8_implementation", "rule");
    const auto by_rule = run();
    const cpu::Int8Choice rule = cpu::OneDnnLastInt8Choice();
    ASSERT_FALSE(rule.candidates.empty());
    const bool small_spatial = k.w[2] > 1 && k.x[1] <= 64;
    bool offers_jit = false;
    for (const std::string& c : rule.candidates) offers_jit |= c.rfind("jit_int8:", 0) == 0;
    if (small_spatial && offers_jit) {
      EXPECT_EQ(rule.chosen.rfind("jit_int8:", 0), 0u) << rule.chosen;
    } else {
      EXPECT_EQ(rule.chosen, rule.candidates[0]);
    }
    with_choices += rule.candidates.size() > 1;
    std::printf("candidates %s chosen %s\n", absl::StrJoin(rule.candidates, " ").c_str(), rule.chosen.c_str());
    for (const std::string& c : rule.candidates) {
      cpu.SetOption("int8_implementation", c);
      const auto forced = run();
      EXPECT_EQ(cpu::OneDnnLastInt8Choice().chosen, c);
      EXPECT_EQ(forced.first, by_rule.first) << c << " against " << rule.chosen;
      EXPECT_EQ(forced.second, by_rule.second) << c << " against " << rule.chosen;
      ++compared;
    }
  }
  cpu.SetOption("int8_implementation", "rule");
  std::printf("%d implementation runs compared; %d cases with more than one implementation; %zu rule choices\n",
              compared, with_choices, cpu::OneDnnRuleInt8Choices() - rule_before);
  if (cpu::OneDnnHasVnni()) {
    // brgconv beside jit_int8 where the source's zero point is 0 and no residual
    // is added (brgconv takes neither), brgconv_1x1 beside jit_int8_1x1 for the
    // 1x1 case: the comparison compared something, and the rule overrode
    // oneDNN's first.
    EXPECT_GE(with_choices, 5);
    EXPECT_GE(cpu::OneDnnRuleInt8Choices() - rule_before, 3u);
  }
  for (Op op : {Op::kQuantizedConv2d}) EXPECT_EQ(cpu.FallbackCount(op), 0) << OpName(op);
}

// Note [int8 convolution implementations]: a 1x1 convolution of one image takes
// jit_int8_1x1 (where oneDNN offers it) on two threads and oneDNN's first on
// one; a batch of two keeps oneDNN's first on either. Both give the same bits.
TEST(OneDnn, Int8RuleTakesJit1x1ForOneImageOnSeveralThreads) {
  Generator gen(13);
  Backend& cpu = GetBackend(Device::Cpu());
  cpu.SetOption("int8_implementation", "rule");
  const int threads_before = GetNumThreads();
  Tensor w = Quantize(Normal({48, 32, 1, 1}, 0, 0.15, &gen), DType::kQInt8, QuantParams::PerTensor(0.003, 0));
  QuantParams po = QuantParams::PerTensor(0.03, 12);
  for (int64_t batch : {1, 2}) {
    Tensor x = Quantize(Uniform({batch, 32, 7, 7}, 0, 2, &gen), DType::kQUInt8, QuantParams::PerTensor(2.0 / 255, 0))
                   .ChannelsLast();
    std::vector<int32_t> first;
    for (int threads : {1, 2}) {
      SCOPED_TRACE(::testing::Message() << "batch " << batch << ", " << threads << " thread(s)");
      SetNumThreads(threads);
      std::vector<int32_t> y = QuantizedConv2d(x, w, Tensor(), {}, DType::kQUInt8, &po, {.relu = true}).IntRepr();
      const cpu::Int8Choice choice = cpu::OneDnnLastInt8Choice();
      ASSERT_FALSE(choice.candidates.empty());
      bool offers = false;
      for (const std::string& c : choice.candidates) offers |= c.rfind("jit_int8_1x1:", 0) == 0;
      if (batch == 1 && threads == 2 && offers) {
        EXPECT_EQ(choice.chosen.rfind("jit_int8_1x1:", 0), 0u) << choice.chosen;
      } else {
        EXPECT_EQ(choice.chosen, choice.candidates[0]);
      }
      if (first.empty()) first = y;
      EXPECT_EQ(y, first);
    }
    if (cpu::OneDnnHasVnni()) EXPECT_TRUE(batch != 1 || cpu::OneDnnLastInt8Choice().candidates.size() > 1);
  }
  SetNumThreads(threads_before);
}

// Note [Exact integers without VNNI] in backends/cpu/onednn.cc: the products
// that overflow int16 pairs (255 * 127 twice) and the odd weights oneDNN halves
// for an s8 source, against sums worked out by hand. Scales are powers of two,
// so each f32 result is exact. Without VNNI (onednn_avx2_test runs this with
// oneDNN limited to AVX2) the unguarded kernels gave 64 * 255 * 127 saturated.
TEST(OneDnnExact, SaturatingProductsAndOddWeights) {
  ExpectFastPath fast_path;
  const int64_t K = 64;
  // u8 255 (zero point 0) times weights 127, -127, 65 and an odd 3.
  Tensor a = Tensor::FromQuantized(std::vector<int32_t>(2 * K, 255), {2, K}, DType::kQUInt8, QuantParams::PerTensor(1.0 / 256, 0));
  std::vector<int32_t> bv;
  for (int64_t k = 0; k < K; ++k) bv.insert(bv.end(), {127, -127, 65, 3});
  Tensor b = Tensor::FromQuantized(bv, {K, 4}, DType::kQInt8, QuantParams::PerTensor(1.0 / 128, 0));
  std::vector<float> y = QuantizedMatmul(a, b, Tensor()).ToVector<float>();
  const double unit = 1.0 / 256 / 128;  // one product's step
  for (int64_t m = 0; m < 2; ++m) {
    EXPECT_EQ(y[m * 4 + 0], 64 * 255 * 127 * unit);
    EXPECT_EQ(y[m * 4 + 1], -64 * 255 * 127 * unit);
    EXPECT_EQ(y[m * 4 + 2], 64 * 255 * 65 * unit);
    EXPECT_EQ(y[m * 4 + 3], 64 * 255 * 3 * unit);
  }
  // s8 with a zero point: (127 - (-128)) = 255 per element, and -128 - (-128) = 0.
  std::vector<int32_t> av(2 * K, 127);
  for (int64_t k = 0; k < K; ++k) av[K + k] = -128;
  Tensor s = Tensor::FromQuantized(av, {2, K}, DType::kQInt8, QuantParams::PerTensor(1.0 / 256, -128));
  y = QuantizedMatmul(s, b, Tensor()).ToVector<float>();
  EXPECT_EQ(y[0], 64 * 255 * 127 * unit);
  EXPECT_EQ(y[3], 64 * 255 * 3 * unit);
  for (int n = 4; n < 8; ++n) EXPECT_EQ(y[n], 0.0f) << n;
  // The convolution: a 3x3 window of 32 channels at 255 under weights of 127
  // (and 1 in the last output channel): the centre pixel sums 9 * 32 products;
  // padding (the zero point) adds nothing at the corner, where 4 * 32 remain.
  for (DType src : {DType::kQUInt8, DType::kQInt8}) {
    int32_t high = src == DType::kQUInt8 ? 255 : 127, zero = src == DType::kQUInt8 ? 0 : -128;
    Tensor x = Tensor::FromQuantized(std::vector<int32_t>(32 * 3 * 3, high), {1, 32, 3, 3}, src,
                                     QuantParams::PerTensor(1.0 / 256, zero));
    std::vector<int32_t> wv(2 * 32 * 9, 127);
    std::fill(wv.begin() + 32 * 9, wv.end(), 1);
    Tensor w = Tensor::FromQuantized(wv, {2, 32, 3, 3}, DType::kQInt8, QuantParams::PerTensor(1.0 / 128, 0));
    Conv2dOptions o;
    o.padding[0] = o.padding[1] = 1;
    std::vector<float> out = QuantizedConv2d(x, w, Tensor(), o).ToVector<float>();
    EXPECT_EQ(out[4], 9 * 32 * 255 * 127 * unit) << Name(src);
    EXPECT_EQ(out[0], 4 * 32 * 255 * 127 * unit) << Name(src);
    EXPECT_EQ(out[9 + 4], 9 * 32 * 255 * unit) << Name(src);
  }
}

// The split's condition is 2 * a_max * max|w| > 32767, a_max the source's
// largest stored value: a 7-bit source (PyTorch x86's reduce_range) or a 4-bit
// one runs weights of 127 whole, exact (2 * 127 * 127 fits int16), and an
// 8-bit source with the same constant weights still splits where the CPU has
// no VNNI (cpu::OneDnnSplitWeightCalls counts the splits).
TEST(OneDnnExact, NarrowSourcesNeedNoSplit) {
  ExpectFastPath fast_path;
  const bool vnni = cpu::OneDnnHasVnni();
  const int64_t K = 64;
  std::vector<int32_t> bv;
  for (int64_t k = 0; k < K; ++k) bv.insert(bv.end(), {127, -127, 65, 3});
  Tensor b = Tensor::FromQuantized(bv, {K, 4}, DType::kQInt8, QuantParams::PerTensor(1.0 / 128, 0));
  b.storage()->MarkConstant();  // the cached split serves every source
  const double unit = 1.0 / 256 / 128;
  for (int64_t a_max : {127, 255, 15, 127}) {
    SCOPED_TRACE(::testing::Message() << "a_max " << a_max);
    QuantParams pa = QuantParams::PerTensor(1.0 / 256, 0);
    if (a_max < 255) pa = pa.WithRange(0, a_max);
    Tensor a = Tensor::FromQuantized(std::vector<int32_t>(2 * K, static_cast<int32_t>(a_max)), {2, K},
                                     DType::kQUInt8, pa);
    const size_t before = cpu::OneDnnSplitWeightCalls();
    std::vector<float> y = QuantizedMatmul(a, b, Tensor()).ToVector<float>();
    EXPECT_EQ(cpu::OneDnnSplitWeightCalls() - before, a_max == 255 && !vnni ? 1u : 0u);
    for (int64_t m = 0; m < 2; ++m) {
      EXPECT_EQ(y[m * 4 + 0], 64 * a_max * 127 * unit);
      EXPECT_EQ(y[m * 4 + 1], -64 * a_max * 127 * unit);
      EXPECT_EQ(y[m * 4 + 2], 64 * a_max * 65 * unit);
      EXPECT_EQ(y[m * 4 + 3], 64 * a_max * 3 * unit);
    }
  }
}

// The fused post-ops (residual, ReLU, a narrowed output range), channels-last
// activations, qint4 weights and cached constant weights: each variant of the
// oneDNN int8 convolution and matmul against the reference kernels, f32 outputs
// to f32 rounding and requantized outputs within one level.
TEST(OneDnn, IntegerPostOpsMatchReference) {
  ExpectFastPath fast_path;
  Generator gen(9);
  struct Variant {
    int residual;  // 0: none, 1: f32, 2: qint8, 3: quint8
    bool relu, narrow, channels_last, int4, constant;
  };
  auto residual_of = [&](int kind, const Shape& shape, bool channels_last) {
    Tensor r = Normal(shape, 0, 1, &gen);
    if (kind >= 2) {
      r = Quantize(r, kind == 2 ? DType::kQInt8 : DType::kQUInt8,
                   QuantParams::PerTensor(0.03, kind == 2 ? 9 : 120));
    }
    return kind == 0 ? Tensor() : channels_last && shape.size() == 4 ? r.ChannelsLast() : r;
  };
  int v = 0;
  for (const Variant& k : {Variant{0, true, false, false, false, false}, Variant{1, false, false, false, false, false},
                           Variant{2, true, false, true, false, false}, Variant{0, true, true, false, false, false},
                           Variant{3, true, true, true, true, true}, Variant{1, false, false, true, false, true},
                           Variant{2, false, false, false, false, false}}) {
    SCOPED_TRACE(::testing::Message() << "variant " << v++);
    Conv2dOptions o;
    o.padding[0] = o.padding[1] = 1;
    Tensor x = Quantize(Uniform({2, 8, 7, 6}, -1, 2, &gen), DType::kQInt8, QuantParams::PerTensor(3.0 / 255, -43));
    if (k.channels_last) x = x.ChannelsLast();
    std::vector<double> scales(12);
    for (size_t i = 0; i < scales.size(); ++i) scales[i] = (k.int4 ? 0.03 : 0.003) + 0.0005 * i;
    QuantParams pw = QuantParams::PerChannel(scales, std::vector<int64_t>(12, 0), 0);
    if (k.int4) pw = pw.WithRange(-7, 7);
    Tensor w = Quantize(Normal({12, 8, 3, 3}, 0, 0.2, &gen), k.int4 ? DType::kQInt4 : DType::kQInt8, pw);
    if (k.constant) w.storage()->MarkConstant();
    Tensor bias = Normal({12}, 0, 0.5, &gen);
    IntegerPostOps post{.residual = residual_of(k.residual, {2, 12, 7, 6}, k.channels_last), .relu = k.relu};
    QuantParams po = QuantParams::PerTensor(0.02, -5);
    if (k.narrow) po = po.WithRange(-8, 7);
    for (int repeat = 0; repeat < (k.constant ? 2 : 1); ++repeat) {  // a second call reads the cached weights
      Tensor fast = QuantizedConv2d(x, w, bias, o, DType::kF32, nullptr, post);
      Tensor fq = QuantizedConv2d(x, w, bias, o, DType::kQInt8, &po, post);
      EXPECT_EQ(fq.is_channels_last(), k.channels_last);
      Tensor ref, rq;
      {
        cpu::ReferenceModeGuard guard;
        ref = QuantizedConv2d(x, w, bias, o, DType::kF32, nullptr, post);
        rq = QuantizedConv2d(x, w, bias, o, DType::kQInt8, &po, post);
      }
      EXPECT_LE(NormalizedMse(fast, ref), 1e-12);
      std::vector<int32_t> f = fq.IntRepr(), r = rq.IntRepr();
      int differ = 0;
      for (size_t i = 0; i < f.size(); ++i) {
        EXPECT_LE(std::abs(f[i] - r[i]), 1) << i;
        differ += f[i] != r[i];
        if (k.narrow) {
          EXPECT_TRUE(f[i] >= -8 && f[i] <= 7) << f[i];
        }
        if (k.relu) {
          EXPECT_GE(f[i], -5);  // ReLU: never below the zero point
        }
      }
      EXPECT_LE(differ, static_cast<int>(f.size() / 100) + 1);
    }
    // The matmul takes the same post-ops.
    Tensor a = Quantize(Uniform({5, 16}, -1, 2, &gen), DType::kQUInt8, QuantParams::PerTensor(3.0 / 255, 85));
    Tensor b = Quantize(Normal({16, 9}, 0, 0.2, &gen), k.int4 ? DType::kQInt4 : DType::kQInt8,
                        k.int4 ? QuantParams::PerTensor(0.05, 0).WithRange(-7, 7) : QuantParams::PerTensor(0.004, 0));
    if (k.constant) b.storage()->MarkConstant();
    IntegerPostOps mpost{.residual = residual_of(k.residual, {5, 9}, false), .relu = k.relu};
    const size_t packed_before = cpu::OneDnnPackedMatmulPrimitives();
    Tensor mfast = QuantizedMatmul(a, b, Tensor(), DType::kF32, nullptr, mpost), mref;
    // Note [Packed matmul weights]: constant weights go in oneDNN's own layout
    // (its brgemm matmul's, AVX-512 up; with AVX2 it takes them plain).
    if (!k.constant) {
      EXPECT_EQ(cpu::OneDnnPackedMatmulPrimitives(), packed_before);
    } else if (cpu::OneDnnHasBf16Kernels()) {
      EXPECT_GT(cpu::OneDnnPackedMatmulPrimitives(), packed_before);
    }
    {
      cpu::ReferenceModeGuard guard;
      mref = QuantizedMatmul(a, b, Tensor(), DType::kF32, nullptr, mpost);
    }
    EXPECT_LE(NormalizedMse(mfast, mref), 1e-12);
  }
}

// The GELU post-op (BERT's intermediate layer fused with the next quantizer):
// oneDNN's eltwise_gelu_erf on real values, then the output scale, against the
// reference epilogue and against the composition quantize(gelu(matmul)).
TEST(OneDnn, IntegerGeluPostOpMatchesReferenceAndComposition) {
  ExpectFastPath fast_path;
  Generator gen(12);
  int64_t M = 40, K = 64, N = 48;
  Tensor a = Quantize(Uniform({M, K}, -2, 2, &gen), DType::kQUInt8, QuantParams::PerTensor(4.0 / 255, 128));
  std::vector<double> scales(N);
  for (int64_t n = 0; n < N; ++n) scales[n] = 0.002 + 0.0001 * n;
  Tensor b = Quantize(Normal({K, N}, 0, 0.2, &gen), DType::kQInt8, QuantParams::PerChannel(scales, std::vector<int64_t>(N, 0), 1));
  Tensor bias = Normal({N}, 0, 0.5, &gen);
  IntegerPostOps gelu{.gelu = true};
  QuantParams po = QuantParams::PerTensor(3.0 / 255, 20);  // GELU's range: about [-0.17, 2.9]
  Tensor fast = QuantizedMatmul(a, b, bias, DType::kF32, nullptr, gelu);
  Tensor fq = QuantizedMatmul(a, b, bias, DType::kQUInt8, &po, gelu);
  Tensor ref, rq;
  {
    cpu::ReferenceModeGuard guard;
    ref = QuantizedMatmul(a, b, bias, DType::kF32, nullptr, gelu);
    rq = QuantizedMatmul(a, b, bias, DType::kQUInt8, &po, gelu);
  }
  EXPECT_LE(NormalizedMse(fast, ref), 1e-12);
  std::vector<int32_t> composition = Quantize(Gelu(QuantizedMatmul(a, b, bias)), DType::kQUInt8, po).IntRepr();
  std::vector<int32_t> f = fq.IntRepr(), r = rq.IntRepr();
  int differ = 0, below_zero = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    EXPECT_LE(std::abs(f[i] - r[i]), 1) << i;
    EXPECT_LE(std::abs(r[i] - composition[i]), 1) << i;
    differ += f[i] != r[i];
    below_zero += r[i] < 20;  // GELU's negative dip is kept
  }
  EXPECT_LE(differ, static_cast<int>(f.size() / 100) + 1);
  EXPECT_GT(below_zero, 0);
  try {
    QuantizedMatmul(a, b, bias, DType::kF32, nullptr, {.relu = true, .gelu = true});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the GELU post-op comes alone"), std::string::npos) << e.what();
  }
}

TEST(OneDnn, ConstantStorageRefusesWrites) {
  Tensor w = Ones({3});
  w.storage()->MarkConstant();
  try {
    AddInplace(w, Ones({3}));
    FAIL() << "expected quanta::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("constant storage"), std::string::npos) << e.what();
  }
}

TEST(OneDnn, PrimitivesAreCachedPerShape) {
  Tensor a = Ones({7, 5}), b = Ones({5, 3});
  Matmul(a, b);
  size_t after_first = cpu::OneDnnCachedPrimitives();
  for (int i = 0; i < 3; ++i) Matmul(a, b);
  EXPECT_EQ(cpu::OneDnnCachedPrimitives(), after_first);
  Matmul(Ones({8, 5}), b);  // a new shape builds one more
  EXPECT_EQ(cpu::OneDnnCachedPrimitives(), after_first + 1);
  Conv2d(Ones({1, 2, 5, 5}), Ones({3, 2, 3, 3}));
  Conv2d(Ones({1, 2, 5, 5}), Ones({3, 2, 3, 3}));
  EXPECT_EQ(cpu::OneDnnCachedPrimitives(), after_first + 2);
  // Integer matmuls whose input scale changes every call (dynamic quantization)
  // share one primitive (Note [Run-time output scales]), and the results follow the scale.
  Tensor w = Quantize(Full({5, 3}, 0.5), DType::kQInt8, QuantParams::PerTensor(0.01, 0));
  for (int i = 1; i <= 4; ++i) {
    Tensor x = Quantize(Full({7, 5}, 0.5 * i), DType::kQUInt8, QuantParams::PerTensor(0.01 * i, 10));
    std::vector<float> y = QuantizedMatmul(x, w, Tensor(), DType::kF32, nullptr, {.varying_input_scale = true}).ToVector<float>();
    EXPECT_NEAR(y[0], 5 * 0.5 * 0.5 * i, 1e-4) << i;  // sum_k x w = 5 * 0.5i * 0.5
    if (i == 1) after_first = cpu::OneDnnCachedPrimitives();
  }
  EXPECT_EQ(cpu::OneDnnCachedPrimitives(), after_first);
}

std::atomic<int64_t> signals_handled{0};
void CountSignal(int) { signals_handled.fetch_add(1, std::memory_order_relaxed); }

// Note [Signals stay off the pool] in core/parallel.cc: oneDNN 2.6's JIT f32
// GEMM runs with its stack pointer in a heap workspace, so a signal handler that
// ran inside it would write its frame into the heap. Here SIGUSR1 arrives every
// 100 us, at the calling thread and at the process, while oneDNN's kernels run
// on two threads: f32 matmuls of a shape it runs with that GEMM ("gemm:jit"),
// channels-last convolutions forward and backward, int8 matmul and convolution.
// Without the guard the matmuls crashed within seconds ("corrupted size vs.
// prev_size"). Every result must stay what it was the first time, and the
// handler must have run.
TEST(OneDnn, SignalsDuringTheKernelsCorruptNothing) {
  Backend& cpu = GetBackend(Device::Cpu());
  const int threads = GetNumThreads();
  SetNumThreads(2);
  cpu.ResetFallbackCounts();
  struct sigaction action = {}, saved = {};
  action.sa_handler = CountSignal;  // no SA_ONSTACK and no alternate stack: the frame goes where the stack pointer is
  ASSERT_EQ(sigaction(SIGUSR1, &action, &saved), 0);
  Generator gen(5);
  Tensor a = Normal({512, 256}, 0, 1, &gen), b = Normal({256, 512}, 0, 1, &gen);
  Tensor x = Normal({32, 16, 16, 16}, 0, 1, &gen).ChannelsLast(), w = Normal({16, 16, 3, 3}, 0, 0.2, &gen);
  Conv2dOptions o;
  o.padding[0] = o.padding[1] = 1;
  Tensor gy = Normal({32, 16, 16, 16}, 0, 1, &gen).ChannelsLast();
  Tensor qa = Quantize(Uniform({256, 256}, 0, 2, &gen), DType::kQUInt8, QuantParams::PerTensor(2.0 / 255, 0));
  Tensor qb = Quantize(Normal({256, 256}, 0, 0.2, &gen), DType::kQInt8, QuantParams::PerTensor(0.01, 0));
  Tensor qx = Quantize(Abs(x), DType::kQUInt8, QuantParams::PerTensor(4.0 / 255, 0));
  Tensor qw = Quantize(w, DType::kQInt8, QuantParams::PerTensor(0.005, 0));
  struct Kernel {
    const char* name;
    std::function<Tensor()> run;
    int times;
  };
  const std::vector<Kernel> kernels = {
      {"matmul", [&] { return Matmul(a, b); }, 1000},
      {"conv2d", [&] { return Conv2d(x, w, Tensor(), o); }, 300},
      {"conv2d backward input", [&] { return Conv2dBackwardInput(gy, w, x.shape(), o); }, 300},
      {"conv2d backward weight", [&] { return Conv2dBackwardWeight(gy, x, w.shape(), o); }, 300},
      {"int8 matmul", [&] { return QuantizedMatmul(qa, qb); }, 1000},
      {"int8 conv2d", [&] { return QuantizedConv2d(qx, qw, Tensor(), o); }, 300},
  };
  std::vector<std::vector<float>> first;
  for (const Kernel& k : kernels) first.push_back(k.run().ToVector<float>());
  const pthread_t caller = pthread_self();
  std::atomic<bool> stop{false};
  int64_t sent = 0;
  std::thread sender([&] {
    while (!stop.load()) {
      if (sent++ % 2 == 0) {
        pthread_kill(caller, SIGUSR1);
      } else {
        kill(getpid(), SIGUSR1);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  });
  std::vector<int> differing(kernels.size());
  for (size_t k = 0; k < kernels.size(); ++k) {
    for (int i = 0; i < kernels[k].times; ++i) {
      Tensor y = kernels[k].run();
      if (i % 50 == 49 && y.ToVector<float>() != first[k]) ++differing[k];
    }
  }
  stop = true;
  sender.join();
  sigaction(SIGUSR1, &saved, nullptr);
  SetNumThreads(threads);
  for (size_t k = 0; k < kernels.size(); ++k) EXPECT_EQ(differing[k], 0) << kernels[k].name;
  EXPECT_GT(signals_handled.load(), 100) << "of " << sent << " sent";
  for (Op op : {Op::kMatmul, Op::kConv2d, Op::kConv2dBackwardInput, Op::kConv2dBackwardWeight, Op::kQuantizedMatmul,
                Op::kQuantizedConv2d}) {
    EXPECT_EQ(cpu.FallbackCount(op), 0) << OpName(op) << ": oneDNN did not run";
  }
}

// Note [CPU block cache]: a freed block of 64 KiB or more (a 384 KiB tensor,
// the size of BERT-base's 128x768 activations) is kept and handed to the next
// request of its class, so the loop below reaches no allocator; a 16 KiB block
// goes straight back to malloc and is not cached.
TEST(CpuBackend, BlockCacheReusesBlocksFrom64KiB) {
  Backend& cpu = GetBackend(Device::Cpu());
  { Tensor warm = Zeros({96 << 10}, DType::kF32); }
  MemoryStats before = cpu.Memory(0);
  EXPECT_GE(before.cached, int64_t{384} << 10);
  for (int i = 0; i < 10; ++i) {
    Tensor t = Zeros({96 << 10}, DType::kF32);
    EXPECT_EQ(cpu.Memory(0).in_use, before.in_use + (int64_t{384} << 10));
  }
  MemoryStats after = cpu.Memory(0);
  EXPECT_EQ(after.device_allocations, before.device_allocations) << "a freed 384 KiB block should be reused";
  { Tensor small = Zeros({4 << 10}, DType::kF32); }
  EXPECT_EQ(cpu.Memory(0).cached, after.cached) << "a 16 KiB block should go back to malloc";
}

}  // namespace
}  // namespace quanta
