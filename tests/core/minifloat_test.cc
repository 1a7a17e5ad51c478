// The minifloat dtypes (core/minifloat.h): the OCP specs' values by hand, every
// code's round trip, round-to-nearest-even at every midpoint, saturation, and
// ml_dtypes' conversions from the committed fixture testdata/minifloat.txt
// (tools/gen_minifloat_fixtures.py); then the tensor side: To() both ways over
// strided and packed storage, and every other op refusing them by name.
#include "core/minifloat.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/tensor.h"
#include "gtest/gtest.h"

namespace quanta {
namespace {

constexpr DType kAll[] = {DType::kF8E4M3, DType::kF8E5M2, DType::kF8E8M0,
                          DType::kF6E2M3, DType::kF6E3M2, DType::kF4E2M1};

float Decode(DType d, uint32_t code) { return DecodeMiniFloat(MiniFloatOf(d), code); }
// Equal values, NaN equal to NaN.
bool Same(float a, float b) { return (std::isnan(a) && std::isnan(b)) || FloatBits(a) == FloatBits(b); }
bool Same(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!Same(a[i], b[i])) return false;
  }
  return true;
}
uint32_t Encode(DType d, float x) { return EncodeMiniFloat(MiniFloatOf(d), x); }

TEST(MiniFloat, TableRows) {
  EXPECT_STREQ(Name(DType::kF8E4M3), "f8_e4m3");
  EXPECT_STREQ(Name(DType::kF4E2M1), "f4_e2m1");
  EXPECT_EQ(Info(DType::kF6E3M2).bits, 6);
  EXPECT_TRUE(IsFloating(DType::kF8E5M2));
  EXPECT_TRUE(IsMiniFloat(DType::kF8E8M0));
  EXPECT_FALSE(IsMiniFloat(DType::kBF16));
  EXPECT_FALSE(IsQuantized(DType::kF4E2M1));
  EXPECT_EQ(StorageBytes(DType::kF4E2M1, 5), 3);  // two a byte
  EXPECT_EQ(StorageBytes(DType::kF6E2M3, 4), 3);  // four in three bytes
  EXPECT_EQ(StorageBytes(DType::kF6E2M3, 5), 4);
  EXPECT_THROW(MiniFloatOf(DType::kF16), Error);
}

// Values from the OCP OFP8 spec (table 1) and the MX v1.0 spec (tables 2-4).
TEST(MiniFloat, SpecValues) {
  // E4M3 ("fn"): max 448 = S.1111.110, min normal 2^-6, max subnormal 0.875 * 2^-6,
  // min subnormal 2^-9, NaN S.1111.111, no infinities.
  EXPECT_EQ(Decode(DType::kF8E4M3, 0x7E), 448.0f);
  EXPECT_EQ(Decode(DType::kF8E4M3, 0x08), 0x1p-6f);
  EXPECT_EQ(Decode(DType::kF8E4M3, 0x07), 0.875f * 0x1p-6f);
  EXPECT_EQ(Decode(DType::kF8E4M3, 0x01), 0x1p-9f);
  EXPECT_EQ(Decode(DType::kF8E4M3, 0x38), 1.0f);
  EXPECT_EQ(Decode(DType::kF8E4M3, 0xC0), -2.0f);
  EXPECT_TRUE(std::isnan(Decode(DType::kF8E4M3, 0x7F)));
  EXPECT_TRUE(std::isnan(Decode(DType::kF8E4M3, 0xFF)));
  EXPECT_TRUE(std::signbit(Decode(DType::kF8E4M3, 0x80)));
  EXPECT_EQ(Decode(DType::kF8E4M3, 0x78), 256.0f);  // S.1111.000 is a number, not infinity
  // E5M2: max 57344 = S.11110.11, min normal 2^-14, max subnormal 0.75 * 2^-14,
  // min subnormal 2^-16, infinity S.11111.00, NaN S.11111.{01, 10, 11}.
  EXPECT_EQ(Decode(DType::kF8E5M2, 0x7B), 57344.0f);
  EXPECT_EQ(Decode(DType::kF8E5M2, 0x04), 0x1p-14f);
  EXPECT_EQ(Decode(DType::kF8E5M2, 0x03), 0.75f * 0x1p-14f);
  EXPECT_EQ(Decode(DType::kF8E5M2, 0x01), 0x1p-16f);
  EXPECT_EQ(Decode(DType::kF8E5M2, 0x7C), INFINITY);
  EXPECT_EQ(Decode(DType::kF8E5M2, 0xFC), -INFINITY);
  for (uint32_t c : {0x7Du, 0x7Eu, 0x7Fu, 0xFFu}) EXPECT_TRUE(std::isnan(Decode(DType::kF8E5M2, c))) << c;
  // E8M0: 2^(code - 127), 0xFF NaN, no zero, no sign.
  EXPECT_EQ(Decode(DType::kF8E8M0, 127), 1.0f);
  EXPECT_EQ(Decode(DType::kF8E8M0, 0), 0x1p-127f);
  EXPECT_EQ(Decode(DType::kF8E8M0, 254), 0x1p127f);
  EXPECT_TRUE(std::isnan(Decode(DType::kF8E8M0, 255)));
  // FP6 E2M3: max 7.5, min normal 1, max subnormal 0.875, min subnormal 0.125.
  EXPECT_EQ(Decode(DType::kF6E2M3, 0x1F), 7.5f);
  EXPECT_EQ(Decode(DType::kF6E2M3, 0x08), 1.0f);
  EXPECT_EQ(Decode(DType::kF6E2M3, 0x07), 0.875f);
  EXPECT_EQ(Decode(DType::kF6E2M3, 0x01), 0.125f);
  EXPECT_EQ(Decode(DType::kF6E2M3, 0x3F), -7.5f);
  // FP6 E3M2: max 28, min normal 0.25, max subnormal 0.1875, min subnormal 0.0625.
  EXPECT_EQ(Decode(DType::kF6E3M2, 0x1F), 28.0f);
  EXPECT_EQ(Decode(DType::kF6E3M2, 0x04), 0.25f);
  EXPECT_EQ(Decode(DType::kF6E3M2, 0x03), 0.1875f);
  EXPECT_EQ(Decode(DType::kF6E3M2, 0x01), 0.0625f);
  // FP4 E2M1: the eight magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6.
  const float fp4[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (uint32_t c = 0; c < 8; ++c) {
    EXPECT_EQ(Decode(DType::kF4E2M1, c), fp4[c]) << c;
    EXPECT_EQ(Decode(DType::kF4E2M1, c | 8), -fp4[c]) << c;
  }
}

// Decoding then encoding gives every code back (NaNs: the format's one NaN;
// -0 stays -0).
TEST(MiniFloat, EveryCodeRoundTrips) {
  for (DType d : kAll) {
    const MiniFloatFormat& f = MiniFloatOf(d);
    for (uint32_t code = 0; code < (1u << Info(d).bits); ++code) {
      float v = DecodeMiniFloat(f, code);
      uint32_t back = EncodeMiniFloat(f, v);
      if (std::isnan(v)) {
        EXPECT_TRUE(std::isnan(DecodeMiniFloat(f, back))) << Name(d) << " code " << code;
      } else if (std::isinf(v)) {
        EXPECT_EQ(back, (code & 0x80u) | 0x7Bu) << "infinity saturates to the largest finite value";
      } else {
        ASSERT_EQ(back, code) << Name(d) << " value " << v;
      }
    }
  }
}

// Every pair of neighbouring values: the midpoint goes to the neighbour whose
// code is even (ties to even; E8M0, without mantissa bits, ties up), one f32
// step either side goes to the nearer neighbour.
TEST(MiniFloat, RoundsToNearestEvenAtEveryMidpoint) {
  for (DType d : kAll) {
    const MiniFloatFormat& f = MiniFloatOf(d);
    std::map<float, uint32_t> values;  // finite, non-negative value -> code
    for (uint32_t code = 0; code < (1u << Info(d).bits); ++code) {
      float v = DecodeMiniFloat(f, code);
      if (std::isfinite(v) && !std::signbit(v)) values[v] = code;
    }
    int checked = 0;
    for (auto it = values.begin(); std::next(it) != values.end(); ++it) {
      auto [lo, lo_code] = *it;
      auto [hi, hi_code] = *std::next(it);
      float mid = static_cast<float>((static_cast<double>(lo) + hi) / 2);
      ASSERT_EQ(static_cast<double>(mid), (static_cast<double>(lo) + hi) / 2) << "midpoint exact in f32";
      uint32_t tie = d == DType::kF8E8M0 ? hi_code : (lo_code % 2 == 0 ? lo_code : hi_code);
      EXPECT_EQ(Encode(d, mid), tie) << Name(d) << " between " << lo << " and " << hi;
      EXPECT_EQ(Encode(d, std::nextafter(mid, 0.0f)), lo_code) << Name(d) << " just below " << mid;
      EXPECT_EQ(Encode(d, std::nextafter(mid, INFINITY)), hi_code) << Name(d) << " just above " << mid;
      if (d != DType::kF8E8M0) {  // and the same mirrored
        EXPECT_EQ(Encode(d, -mid), tie | (1u << (Info(d).bits - 1))) << Name(d) << " at " << -mid;
      }
      ++checked;
    }
    EXPECT_EQ(checked, static_cast<int>(values.size()) - 1);
  }
}

TEST(MiniFloat, SaturatesAndMapsSpecialValues) {
  const float huge[] = {1e30f, std::numeric_limits<float>::max(), INFINITY};
  for (DType d : kAll) {
    const MiniFloatFormat& f = MiniFloatOf(d);
    for (float x : huge) {
      if (x > f.max) {
        EXPECT_EQ(Encode(d, x), static_cast<uint32_t>(f.max_code)) << Name(d) << " " << x;
      }
    }
    EXPECT_EQ(Encode(d, f.max * 1.25f), static_cast<uint32_t>(f.max_code)) << Name(d);
    if (d == DType::kF8E8M0) continue;
    const uint32_t minus = 1u << (Info(d).bits - 1);
    EXPECT_EQ(Encode(d, -INFINITY), minus | f.max_code) << Name(d);
    EXPECT_EQ(Encode(d, -f.max * 1.25f), minus | f.max_code) << Name(d);
    EXPECT_EQ(Encode(d, -0.0f), minus) << Name(d);
    EXPECT_EQ(Encode(d, 1e-30f), 0u) << Name(d) << ": far below the smallest subnormal";
  }
  EXPECT_EQ(Encode(DType::kF8E4M3, 464.0f), 0x7Eu);  // halfway to 480 (the NaN pattern): 448
  EXPECT_EQ(Encode(DType::kF8E5M2, INFINITY), 0x7Bu);  // saturating mode: not 0x7C
  EXPECT_EQ(Encode(DType::kF8E4M3, NAN), 0x7Fu);
  EXPECT_EQ(Encode(DType::kF8E5M2, NAN), 0x7Fu);
  EXPECT_EQ(Encode(DType::kF8E8M0, NAN), 0xFFu);
  EXPECT_EQ(Encode(DType::kF6E2M3, NAN), 0u);  // no NaN in FP6/FP4: +0
  EXPECT_EQ(Encode(DType::kF4E2M1, NAN), 0u);
  EXPECT_EQ(Encode(DType::kF8E8M0, 0.0f), 0u);  // no zero: 2^-127
  EXPECT_EQ(Encode(DType::kF8E8M0, -1.0f), 0xFFu);
  EXPECT_EQ(Encode(DType::kF8E8M0, 1.5f), 128u);
  EXPECT_EQ(Encode(DType::kF8E8M0, std::nextafter(1.5f, 0.0f)), 127u);
  EXPECT_EQ(Encode(DType::kF8E8M0, 0.3f), 125u);  // 0.25
}

// Every line of the ml_dtypes fixture.
TEST(MiniFloat, MatchesMlDtypes) {
  std::ifstream in("tests/core/testdata/minifloat.txt");
  ASSERT_TRUE(in) << "missing tests/core/testdata/minifloat.txt (tools/gen_minifloat_fixtures.py)";
  std::map<std::string, DType> by_name;
  for (DType d : kAll) by_name[Name(d)] = d;
  std::map<std::string, int> decodes, encodes;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream s(line);
    std::string kind, name;
    s >> kind >> name;
    ASSERT_TRUE(by_name.count(name)) << line;
    DType d = by_name[name];
    uint32_t a, b;
    if (kind == "decode") {
      s >> std::dec >> a >> std::hex >> b;
      float want = BitsToFloat(b), got = Decode(d, a);
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(got)) << line;
      } else {
        EXPECT_EQ(FloatBits(got), b) << line << ": got " << got;
      }
      ++decodes[name];
    } else {
      ASSERT_EQ(kind, "encode") << line;
      s >> std::hex >> a >> std::dec >> b;
      EXPECT_EQ(Encode(d, BitsToFloat(a)), b) << line << " (" << BitsToFloat(a) << ")";
      ++encodes[name];
    }
  }
  for (DType d : kAll) {
    EXPECT_EQ(decodes[Name(d)], 1 << Info(d).bits) << Name(d);
    EXPECT_GT(encodes[Name(d)], 400) << Name(d);
  }
}

// EncodeMiniFloatRun (the vectorized loop block quantization uses; its
// arithmetic is EncodeMiniFloat's, which the tests above hold to the OCP tables
// and ml_dtypes) gives EncodeMiniFloat's code for every code's value and its two f32 neighbours,
// every midpoint between neighbouring codes and its neighbours, both signs,
// the special values, and a sweep of f32 bit patterns across every exponent.
TEST(MiniFloat, EncodeRunMatchesTheScalarEncoder) {
  for (DType d : kAll) {
    if (d == DType::kF8E8M0) continue;  // a scale type, never an element
    SCOPED_TRACE(Name(d));
    const MiniFloatFormat& f = MiniFloatOf(d);
    const int width = f.exp_bits + f.man_bits;
    std::vector<float> x = {0.f, -0.f, NAN, -NAN, INFINITY, -INFINITY, f.max, 2 * f.max,
                            std::numeric_limits<float>::max(), std::numeric_limits<float>::denorm_min()};
    std::vector<float> finite;
    for (uint32_t code = 0; code < (1u << width); ++code) {
      float v = DecodeMiniFloat(f, code);
      if (std::isfinite(v)) finite.push_back(v);
    }
    std::sort(finite.begin(), finite.end());
    for (size_t i = 0; i < finite.size(); ++i) {
      float v = finite[i];
      for (float w : {v, std::nextafter(v, -INFINITY), std::nextafter(v, INFINITY)}) x.push_back(w);
      if (i + 1 < finite.size()) {
        float mid = (v + finite[i + 1]) / 2;  // exact: the codes have far fewer bits than f32
        for (float w : {mid, std::nextafter(mid, -INFINITY), std::nextafter(mid, INFINITY)}) x.push_back(w);
      }
    }
    for (uint64_t bits = 0; bits < (1ull << 32); bits += 4099) x.push_back(BitsToFloat(static_cast<uint32_t>(bits)));
    std::vector<uint8_t> got(x.size());
    EncodeMiniFloatRun(f, x.data(), static_cast<int64_t>(x.size()), got.data());
    int64_t wrong = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      uint32_t want = EncodeMiniFloat(f, x[i]);
      if (got[i] != want && ++wrong <= 5) {
        ADD_FAILURE() << "x = " << x[i] << " (bits 0x" << std::hex << FloatBits(x[i]) << std::dec << "): run code "
                      << int(got[i]) << ", scalar code " << want;
      }
    }
    EXPECT_EQ(wrong, 0) << "of " << x.size() << " values";
  }
}

// Every FP6 and FP4 value is an E4M3 value: the ONNX export carries those
// elements as FLOAT8E4M3FN (Note [Block formats in ONNX] in quant/onnx_export.cc).
TEST(MiniFloat, Fp6AndFp4ValuesAreE4m3Values) {
  const MiniFloatFormat& e4m3 = MiniFloatOf(DType::kF8E4M3);
  for (DType d : {DType::kF6E2M3, DType::kF6E3M2, DType::kF4E2M1}) {
    const MiniFloatFormat& f = MiniFloatOf(d);
    for (uint32_t code = 0; code < (1u << (f.exp_bits + f.man_bits + 1)); ++code) {
      const float v = DecodeMiniFloat(f, code);
      EXPECT_TRUE(Same(DecodeMiniFloat(e4m3, EncodeMiniFloat(e4m3, v)), v)) << Name(d) << " code " << code << " = " << v;
    }
  }
}

TEST(MiniFloat, TensorConversionBothWays) {
  std::vector<float> v;
  for (int i = 0; i < 24; ++i) v.push_back(std::ldexp(static_cast<float>(i - 11) * 0.37f, i % 7 - 3));
  Tensor x = Tensor::FromVector<float>(v, {4, 6}).Transpose(0, 1);  // strided input
  for (DType d : kAll) {
    Tensor q = x.To(d);
    EXPECT_EQ(q.dtype(), d);
    EXPECT_EQ(q.shape(), (Shape{6, 4}));
    std::vector<float> back = q.To(DType::kF32).ToVector<float>();
    std::vector<float> want = x.Contiguous().ToVector<float>();
    for (size_t i = 0; i < want.size(); ++i) {
      float expect = Decode(d, Encode(d, want[i]));
      EXPECT_TRUE(Same(back[i], expect)) << Name(d) << " element " << i << " = " << want[i] << ": " << back[i];
    }
    // f64 and bf16 sources, and a minifloat to another minifloat.
    EXPECT_TRUE(Same(x.To(DType::kF64).To(d).To(DType::kF32).ToVector<float>(), back)) << Name(d);
    EXPECT_TRUE(Same(x.To(DType::kBF16).To(d).To(DType::kF32).ToVector<float>(),
                     x.To(DType::kBF16).To(DType::kF32).To(d).To(DType::kF32).ToVector<float>()))
        << Name(d);
    std::vector<float> via = q.To(DType::kF8E5M2).To(DType::kF32).ToVector<float>();
    for (size_t i = 0; i < via.size(); ++i) {
      EXPECT_TRUE(Same(via[i], Decode(DType::kF8E5M2, Encode(DType::kF8E5M2, back[i])))) << Name(d) << " " << i;
    }
  }
}

TEST(MiniFloat, PackedStorage) {
  // FP4: two codes a byte, low nibble first. 1.0 = 0x2, -6 = 0xF, 0.5 = 0x1.
  Tensor x = Tensor::FromVector<float>({1.0f, -6.0f, 0.5f}, {3}).To(DType::kF4E2M1);
  const auto* bytes = static_cast<const uint8_t*>(x.raw_data());
  EXPECT_EQ(bytes[0], 0xF2);
  EXPECT_EQ(bytes[1] & 0x0F, 0x1);
  // FP6: element i at bits 6i..6i+5. E2M3 codes 1.0 = 0x08, 7.5 = 0x1F, -0.125 = 0x21, 2.0 = 0x10.
  Tensor y = Tensor::FromVector<float>({1.0f, 7.5f, -0.125f, 2.0f}, {4}).To(DType::kF6E2M3);
  const auto* b6 = static_cast<const uint8_t*>(y.raw_data());
  uint32_t word = b6[0] | (b6[1] << 8) | (b6[2] << 16);
  EXPECT_EQ(word, 0x08u | (0x1Fu << 6) | (0x21u << 12) | (0x10u << 18));
  // Writing into a view at an odd element keeps the neighbours.
  for (DType d : {DType::kF4E2M1, DType::kF6E2M3, DType::kF6E3M2}) {
    Tensor t = Tensor::FromVector<float>({1, 2, 3, 4, 6, 0.5f, 1.5f}, {7}).To(d);
    Tensor part = t.Narrow(0, 3, 3);
    part.CopyFrom(Tensor::FromVector<float>({-1, -2, -3}, {3}).To(d));
    EXPECT_EQ(t.To(DType::kF32).ToVector<float>(), (std::vector<float>{1, 2, 3, -1, -2, -3, 1.5f})) << Name(d);
    // Reading a view that starts mid-byte.
    EXPECT_EQ(t.Narrow(0, 1, 5).To(DType::kF32).ToVector<float>(), (std::vector<float>{2, 3, -1, -2, -3})) << Name(d);
    EXPECT_EQ(t.Narrow(0, 1, 5).Contiguous().To(DType::kF32).ToVector<float>(),
              (std::vector<float>{2, 3, -1, -2, -3})) << Name(d);
  }
}

TEST(MiniFloat, OpsRefuseThemByName) {
  Tensor x = Tensor::FromVector<float>({1, 2}, {2}).To(DType::kF8E4M3);
  try {
    Add(x, x);
    FAIL() << "add on f8_e4m3 did not throw";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("add"), std::string::npos) << m;
    EXPECT_NE(m.find("f8_e4m3[2]"), std::string::npos) << m;
    EXPECT_NE(m.find("to(f32)"), std::string::npos) << m;
  }
  EXPECT_THROW(Sum(x.To(DType::kF4E2M1)), Error);
  EXPECT_THROW(Tensor::FromVector<float>({1}, {1}).To(DType::kQInt8), Error);
  EXPECT_EQ(x.ToString(), "tensor([1.0000, 2.0000], dtype=f8_e4m3)");
}

}  // namespace
}  // namespace quanta
