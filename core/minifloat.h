// The narrow floating-point formats of FP8 training and OCP microscaling (MX
// v1.0): their parameters and their conversions to and from f32. Elements of
// these dtypes are codes; no kernel computes in them (Note [Storage-only
// dtypes] in core/dtype.h): Tensor::To converts, block-scaled quantization
// (issue 21) stores.
//
//   const MiniFloatFormat& f = MiniFloatOf(DType::kF8E4M3);  // f.max == 448
//   uint8_t code = EncodeMiniFloat(f, 0.3f);                 // 0x2A: 0.3125
//   float v = DecodeMiniFloat(f, code);
//
// Note [Minifloat conversion]
// f32 -> code rounds to nearest, ties to even, and saturates: every finite
// value beyond the largest and every infinity becomes the largest finite value
// of its sign (f8_e5m2 too, although it has infinities: the OCP spec's
// saturating mode, cuBLASLt's and DeepSeek-V3's casts). NaN becomes the
// format's NaN where it has one (f8_e4m3: S.1111.111, f8_e5m2: S.11111.11,
// e8m0: 0xFF) and +0 where it has none (FP6, FP4: in MX blocks the E8M0 scale
// carries NaN). E8M0 is unsigned powers of two 2^-127..2^127: a value rounds to
// the nearer power in linear distance, the midpoint 1.5 * 2^k up (as PyTorch
// and ml_dtypes do); zero and everything below 2^-127 saturate to 2^-127,
// negative values become NaN. f64 converts through f32 (as PyTorch does).
#pragma once

#include <cmath>
#include <cstdint>

#include "core/dtype.h"

namespace quanta {

struct MiniFloatFormat {
  DType dtype;
  int exp_bits, man_bits;  // sign bit: 1 unless e8m0
  int bias;
  bool has_inf;            // f8_e5m2 alone
  int nan_code;            // the positive NaN's code, -1 when there is none
  int max_code;            // the largest finite value's code
  float max;               // its value
};

// Every minifloat dtype's row (throws for other dtypes, naming them).
const MiniFloatFormat& MiniFloatOf(DType dtype);

inline QUANTA_HOST_DEVICE float DecodeMiniFloat(const MiniFloatFormat& f, uint32_t code) {
  if (f.exp_bits == 8) {  // e8m0
    if (code == 0xFFu) return NAN;
    return ldexpf(1.0f, static_cast<int>(code) - 127);
  }
  const int width = f.exp_bits + f.man_bits;
  const bool negative = (code >> width) & 1u;
  const uint32_t magnitude = code & ((1u << width) - 1u);
  if (f.nan_code >= 0 && magnitude == static_cast<uint32_t>(f.nan_code)) return NAN;
  const uint32_t exp_field = magnitude >> f.man_bits;
  const uint32_t mant = magnitude & ((1u << f.man_bits) - 1u);
  float v;
  if (f.has_inf && exp_field == (1u << f.exp_bits) - 1u) {
    v = mant == 0 ? INFINITY : NAN;
  } else {  // (2^man_bits + mant) 2^(e - bias - man_bits); subnormals: mant 2^(1 - bias - man_bits)
    const int e = exp_field == 0 ? 1 : static_cast<int>(exp_field);
    const uint32_t units = exp_field == 0 ? mant : mant + (1u << f.man_bits);
    v = static_cast<float>(units) * BitsToFloat(static_cast<uint32_t>(127 + e - f.bias - f.man_bits) << 23);
  }
  return negative ? -v : v;
}

// Note [Encoding runs]: an element format's code for the f32 with these bits,
// round to nearest even and saturating (Note [Minifloat conversion]), in
// arithmetic without branches, so that a loop of it vectorizes (block
// quantization's inner loop, EncodeMiniFloatRun). The magnitude is first
// clamped to the largest finite value, compared as bits (non-negative floats
// order as their bits; a NaN's lie above infinity's and is replaced at the
// end): that value is itself a code, so rounding can no longer pass it, and
// saturation comes free. With e the binade's exponent (raised to emin, where
// subnormals share the lowest binade; f32 subnormals fall below every format's
// emin) and k = rint(a * 2^(man_bits - e)) in [0, 2^(man_bits + 1)] (an exact
// scaling by a power of two; rintf rounds half to even in the default mode), the
// code is ((e + bias - 1) << man_bits) + k: a normal value's exponent field plus
// its implicit bit as k's top bit, a subnormal's k alone (e + bias - 1 is 0 at
// emin), and k = 2^(man_bits + 1), rounded up out of the binade, lands on the
// next exponent with a zero mantissa. NaN is selected by a mask: GCC 12 does
// not vectorize a loop with a float comparison (it may trap) or a byte select.
inline QUANTA_HOST_DEVICE uint32_t EncodeElement(uint32_t bits, int man, int bias, int width, uint32_t max_bits,
                                                 uint32_t nan_code) {
  constexpr uint32_t kInfinityBits = 0x7F800000u;
  const int emin = 1 - bias;
  const uint32_t magnitude = bits & 0x7FFFFFFFu;
  const uint32_t a = magnitude < max_bits ? magnitude : max_bits;
  int e = static_cast<int>(a >> 23) - 127;
  e = e < emin ? emin : e;
  const float to_units = BitsToFloat(static_cast<uint32_t>(127 + man - e) << 23);
  const int32_t k = static_cast<int32_t>(rintf(BitsToFloat(a) * to_units));
  const uint32_t code = (static_cast<uint32_t>(e + bias - 1) << man) + static_cast<uint32_t>(k);
  const uint32_t sign = (bits >> 31) << width;
  const uint32_t nan_mask = 0u - static_cast<uint32_t>(magnitude > kInfinityBits);
  return (nan_mask & nan_code) | (~nan_mask & (sign | code));
}

inline QUANTA_HOST_DEVICE uint32_t EncodeMiniFloat(const MiniFloatFormat& f, float x) {
  if (f.exp_bits == 8) {  // e8m0: unsigned powers of two
    if (std::isnan(x) || x < 0) return 0xFFu;
    if (x >= 0x1p127f) return 0xFEu;
    if (x <= 0x1p-127f) return 0u;
    int e;
    float m = frexpf(x, &e);  // x = m 2^e, m in [0.5, 1)
    return static_cast<uint32_t>(e - 1 + 127 + (m >= 0.75f ? 1 : 0));
  }
  return EncodeElement(FloatBits(x), f.man_bits, f.bias, f.exp_bits + f.man_bits, FloatBits(f.max),
                       f.nan_code >= 0 ? static_cast<uint32_t>(f.nan_code) : 0u);
}

// EncodeMiniFloat over n values of an element format (not e8m0), a loop the
// compiler vectorizes (Note [Encoding runs]). The format is read into locals
// first: a byte store may alias anything, so fields read through `f` would be
// reloaded after every store.
inline void EncodeMiniFloatRun(const MiniFloatFormat& f, const float* __restrict x, int64_t n,
                               uint8_t* __restrict codes) {
  const int man = f.man_bits, bias = f.bias, width = f.exp_bits + f.man_bits;
  const uint32_t max_bits = FloatBits(f.max), nan_code = f.nan_code >= 0 ? static_cast<uint32_t>(f.nan_code) : 0u;
  for (int64_t i = 0; i < n; ++i) {
    codes[i] = static_cast<uint8_t>(EncodeElement(FloatBits(x[i]), man, bias, width, max_bits, nan_code));
  }
}

// The exponent of a format's largest finite value (E4M3 8, E5M2 15, E3M2 4,
// E2M3 2, E2M1 2): the emax of OCP MX's shared-exponent rule.
inline QUANTA_HOST_DEVICE int MaxExponent(const MiniFloatFormat& f) {
  int exp;
  frexpf(f.max, &exp);
  return exp - 1;
}

// Note [Block scaling]
// Block-scaled formats (BlockQuantize in core/ops.h) give each block of elements
// one scale from its largest magnitude amax, and store x / scale as minifloat
// codes. The scale by its dtype:
//  - f32 (DeepSeek-V3's FP8, arXiv 2412.19437 §3.3): amax / (the element's max),
//    so that amax lands on the largest code; 1 for an all-zero block.
//  - f8_e8m0 (OCP MX v1.0 §6.3): 2^(floor(log2 amax) - emax), emax the exponent
//    of the element's largest normal (E4M3 8, E5M2 15, E3M2 4, E2M3 2, E2M1 2);
//    amax itself may then exceed the element's max and saturates. Clamped to
//    2^-127..2^127; an all-zero block takes 2^-127; NaN in the block: NaN.
//  - f8_e4m3 (NVFP4): a per-tensor f32 scale g = amax_tensor / (448 * 6) makes
//    the block scale amax / 6 / g fit E4M3, rounded to it; elements are
//    x / (scale * g). A zero scale (all-zero block) gives zero elements.
// The scale a stored block scale stands for (g included): what the elements
// are multiplied by to dequantize.
inline QUANTA_HOST_DEVICE float DecodeBlockScale(const MiniFloatFormat* scale /* null: f32 */, uint32_t stored,
                                                 float tensor_scale) {
  if (scale == nullptr) return BitsToFloat(stored);
  const float s = DecodeMiniFloat(*scale, stored);
  return scale->exp_bits == 8 ? s : s * tensor_scale;  // e8m0 (MX) has no tensor scale
}

// BlockScaleOf returns the scale the elements are divided by (g included) and
// writes the code that stores it (the f32 bits for f32 scales).
inline QUANTA_HOST_DEVICE float BlockScaleOf(const MiniFloatFormat* scale /* null: f32 */,
                                             const MiniFloatFormat& element, float amax, float tensor_scale,
                                             uint32_t* stored) {
  if (scale == nullptr) {
    float s = amax > 0 ? amax / element.max : 1.0f;
    *stored = FloatBits(s);
    return s;
  }
  if (scale->exp_bits == 8) {  // e8m0
    if (std::isnan(amax)) {
      *stored = 0xFFu;
      return NAN;
    }
    const int emax = MaxExponent(element);
    int shared = -127;
    if (std::isinf(amax)) {
      shared = 127;
    } else if (amax > 0) {
      int exp;
      frexpf(amax, &exp);
      shared = exp - 1 - emax;
      shared = shared < -127 ? -127 : shared > 127 ? 127 : shared;
    }
    *stored = static_cast<uint32_t>(shared + 127);
    return ldexpf(1.0f, shared);
  }
  *stored = EncodeMiniFloat(*scale, amax / element.max / tensor_scale);  // e4m3 (NVFP4)
  return DecodeBlockScale(scale, *stored, tensor_scale);
}

// Element i of minifloat storage (FP4 two to a byte, low nibble first; FP6
// four to three bytes, element i at bits 6i..6i+5 little-endian).
inline QUANTA_HOST_DEVICE uint32_t LoadMiniFloatCode(int bits, const uint8_t* base, int64_t i) {
  if (bits == 8) return base[i];
  if (bits == 4) return (i & 1) ? base[i >> 1] >> 4 : base[i >> 1] & 0xFu;
  const int64_t bit = i * 6;
  const int shift = static_cast<int>(bit & 7);
  uint32_t word = base[bit >> 3];
  if (shift > 2) word |= static_cast<uint32_t>(base[(bit >> 3) + 1]) << 8;
  return (word >> shift) & 0x3Fu;
}
inline QUANTA_HOST_DEVICE void StoreMiniFloatCode(int bits, uint8_t* base, int64_t i, uint32_t code) {
  if (bits == 8) {
    base[i] = static_cast<uint8_t>(code);
  } else if (bits == 4) {
    uint8_t& byte = base[i >> 1];
    byte = (i & 1) ? static_cast<uint8_t>((byte & 0x0F) | (code << 4)) : static_cast<uint8_t>((byte & 0xF0) | code);
  } else {
    const int64_t bit = i * 6;
    const int shift = static_cast<int>(bit & 7);
    const uint32_t mask = 0x3Fu << shift;
    uint8_t* p = base + (bit >> 3);
    p[0] = static_cast<uint8_t>((p[0] & ~mask) | ((code << shift) & 0xFFu));
    if (shift > 2) p[1] = static_cast<uint8_t>((p[1] & ~(mask >> 8)) | (code >> (8 - shift)));
  }
}

}  // namespace quanta
