// The dtype table, f16/bf16 rounding, and qint4 packing.
#include "core/dtype.h"

#include <cmath>

#include "gtest/gtest.h"

namespace quanta {
namespace {

TEST(DType, TableRows) {
  EXPECT_STREQ(Name(DType::kF32), "f32");
  EXPECT_STREQ(Name(DType::kBF16), "bf16");
  EXPECT_STREQ(Name(DType::kQInt4), "qint4");
  EXPECT_EQ(Info(DType::kF64).bits, 64);
  EXPECT_EQ(Info(DType::kQUInt8).qmin, 0);
  EXPECT_EQ(Info(DType::kQUInt8).qmax, 255);
  EXPECT_EQ(Info(DType::kQInt4).qmin, -8);
  EXPECT_EQ(Info(DType::kQInt4).qmax, 7);
  EXPECT_TRUE(IsQuantized(DType::kQInt8));
  EXPECT_FALSE(IsQuantized(DType::kI8));
  EXPECT_TRUE(IsFloating(DType::kF16));
  EXPECT_EQ(StorageBytes(DType::kQInt4, 5), 3);
  EXPECT_EQ(StorageBytes(DType::kF32, 5), 20);
  EXPECT_EQ(StorageBytes(DType::kBool, 3), 3);
}

TEST(DType, Promotion) {
  EXPECT_EQ(PromoteTypes(DType::kI32, DType::kF32), DType::kF32);
  EXPECT_EQ(PromoteTypes(DType::kF16, DType::kBF16), DType::kF32);
  EXPECT_EQ(PromoteTypes(DType::kU8, DType::kI8), DType::kI32);
  EXPECT_EQ(PromoteTypes(DType::kBool, DType::kI64), DType::kI64);
  EXPECT_EQ(PromoteTypes(DType::kF64, DType::kF16), DType::kF64);
}

TEST(DType, BFloat16RoundsToNearestEven) {
  // 1 + 2^-8 lies halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to even (1).
  EXPECT_EQ(BFloat16::FromFloat(1.0f + 0x1p-8f).bits, 0x3F80);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): goes up.
  EXPECT_EQ(BFloat16::FromFloat(1.0f + 3 * 0x1p-8f).bits, 0x3F82);
  // Just above halfway rounds up.
  EXPECT_EQ(BFloat16::FromFloat(1.0f + 0x1p-8f + 0x1p-20f).bits, 0x3F81);
  EXPECT_EQ(BFloat16::FromFloat(-2.0f).bits, 0xC000);
  EXPECT_FLOAT_EQ(BFloat16{0x3FC0}.ToFloat(), 1.5f);
  EXPECT_TRUE(std::isnan(BFloat16::FromFloat(NAN).ToFloat()));
  EXPECT_TRUE(std::isinf(BFloat16::FromFloat(INFINITY).ToFloat()));
}

TEST(DType, HalfRoundsToNearestEven) {
  EXPECT_EQ(Half::FromFloat(1.0f).bits, 0x3C00);
  EXPECT_EQ(Half::FromFloat(-2.0f).bits, 0xC000);
  EXPECT_EQ(Half::FromFloat(65504.0f).bits, 0x7BFF);   // largest finite
  EXPECT_EQ(Half::FromFloat(65520.0f).bits, 0x7C00);   // halfway to 2^16: rounds to inf
  EXPECT_EQ(Half::FromFloat(65519.0f).bits, 0x7BFF);
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1).
  EXPECT_EQ(Half::FromFloat(1.0f + 0x1p-11f).bits, 0x3C00);
  // 1 + 3 * 2^-11: halfway between 0x3C01 (odd) and 0x3C02: goes up to even.
  EXPECT_EQ(Half::FromFloat(1.0f + 3 * 0x1p-11f).bits, 0x3C02);
  // Subnormals: 2^-24 is the smallest; 2^-25 ties to 0; 1.5 * 2^-24 ties up to 2 * 2^-24.
  EXPECT_EQ(Half::FromFloat(0x1p-24f).bits, 0x0001);
  EXPECT_EQ(Half::FromFloat(0x1p-25f).bits, 0x0000);
  EXPECT_EQ(Half::FromFloat(1.5f * 0x1p-24f).bits, 0x0002);
  EXPECT_EQ(Half::FromFloat(0x1p-14f).bits, 0x0400);  // smallest normal
  EXPECT_FLOAT_EQ(Half{0x0001}.ToFloat(), 0x1p-24f);
  EXPECT_FLOAT_EQ(Half{0x3555}.ToFloat(), 0.333251953125f);
  EXPECT_TRUE(std::isnan(Half::FromFloat(NAN).ToFloat()));
  EXPECT_EQ(Half::FromFloat(-INFINITY).bits, 0xFC00);
}

TEST(DType, HalfRoundTripsEveryValue) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    Half h{static_cast<uint16_t>(bits)};
    float f = h.ToFloat();
    if (std::isnan(f)) continue;
    ASSERT_EQ(Half::FromFloat(f).bits, bits) << "bits " << bits;
  }
}

TEST(DType, QInt4PacksTwoPerByte) {
  uint8_t bytes[2] = {0, 0};
  StoreQInt4(bytes, 0, -8);
  StoreQInt4(bytes, 1, 7);
  StoreQInt4(bytes, 2, -1);
  EXPECT_EQ(bytes[0], 0x78);  // low nibble 0x8 (-8), high nibble 0x7
  EXPECT_EQ(bytes[1], 0x0F);
  EXPECT_EQ(LoadQInt4(bytes, 0), -8);
  EXPECT_EQ(LoadQInt4(bytes, 1), 7);
  EXPECT_EQ(LoadQInt4(bytes, 2), -1);
  StoreQInt4(bytes, 1, 3);  // rewriting one nibble keeps its neighbour
  EXPECT_EQ(LoadQInt4(bytes, 0), -8);
  EXPECT_EQ(LoadQInt4(bytes, 1), 3);
}

}  // namespace
}  // namespace quanta
