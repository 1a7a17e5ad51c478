// Element types: one row per dtype in a table (name, bits, kind, integer range),
// the storage structs for f16/bf16/qint4, and VisitDType, the one dispatch switch
// kernels are templated through. Not here: quantize/dequantize (quant/).
//
//   const DTypeInfo& info = Info(DType::kQInt4);   // info.bits == 4
//   Half h = Half::FromFloat(1.0f / 3);             // round to nearest even
//   VisitDType(t.dtype(), [&]<typename T>(TypeTag<T>) { Fill<T>(...); });
//   StorageBytes(DType::kQInt4, 5) == 3             // two values a byte
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>

#if defined(__CUDACC__)
#define QUANTA_HOST_DEVICE __host__ __device__
#else
#define QUANTA_HOST_DEVICE
#endif

namespace quanta {

enum class DType : uint8_t {
  kF32, kF64, kF16, kBF16,
  kI32, kI64, kI8, kU8, kBool,
  kQInt8, kQUInt8, kQInt4,
  // Minifloats (core/minifloat.h): FP8 (OCP: E4M3 "fn", E5M2), the E8M0 scale,
  // and the MX element types FP6 (E2M3, E3M2) and FP4 (E2M1).
  kF8E4M3, kF8E5M2, kF8E8M0, kF6E2M3, kF6E3M2, kF4E2M1,
};
inline constexpr int kNumDTypes = 18;

struct DTypeInfo {
  DType dtype;
  const char* name;  // "f32", "qint4", ...
  int bits;               // bits per element: 4 for qint4
  bool is_floating;
  bool is_quantized;
  bool is_signed;
  int64_t qmin, qmax;     // integer range of quantized (and integer) dtypes
  bool is_minifloat;      // floating, storage only (Note [Storage-only dtypes])
};

const DTypeInfo& Info(DType dtype);
inline const char* Name(DType dtype) { return Info(dtype).name; }
inline bool IsFloating(DType d) { return Info(d).is_floating; }
inline bool IsQuantized(DType d) { return Info(d).is_quantized; }
inline bool IsIntegral(DType d) { return !IsFloating(d) && !IsQuantized(d) && d != DType::kBool; }

// Note [Storage-only dtypes]
// The minifloats (f8_e4m3, f8_e5m2, f8_e8m0, f6_e2m3, f6_e3m2, f4_e2m1) are
// floating dtypes whose elements no kernel computes in, as in PyTorch, where
// float8 tensors are cast, copied, moved and stored, and scaled matmuls read
// them. Tensor::To converts to and from them (core/minifloat.h: round to nearest
// even, saturating); every other op rejects them by name (Dispatch), and
// VisitDType throws for them, so no kernel is instantiated over them.
inline bool IsMiniFloat(DType d) { return Info(d).is_minifloat; }
[[noreturn]] void ThrowStorageOnly(DType d);
// Bytes that `numel` elements occupy in storage (qint4 and f4_e2m1 pack two per
// byte, f6 four per three bytes).
inline int64_t StorageBytes(DType d, int64_t numel) { return (numel * Info(d).bits + 7) / 8; }

// The dtype both operands of a binary op are computed in (PyTorch's promotion:
// bool < integers < floating, wider wins, f16 with bf16 gives f32).
DType PromoteTypes(DType a, DType b);

// ---- storage structs --------------------------------------------------------

// IEEE binary16. Conversions round to nearest, ties to even.
struct Half {
  uint16_t bits;
  static QUANTA_HOST_DEVICE Half FromFloat(float f);
  QUANTA_HOST_DEVICE float ToFloat() const;
};

// bfloat16: the top half of an f32. Conversions round to nearest, ties to even.
struct BFloat16 {
  uint16_t bits;
  static QUANTA_HOST_DEVICE BFloat16 FromFloat(float f);
  QUANTA_HOST_DEVICE float ToFloat() const;
};

// Two signed 4-bit values in one byte: element 2k in the low nibble, 2k+1 in the
// high nibble. Tensors address qint4 elements by index, never by pointer.
struct QInt4x2 {
  uint8_t bits;
};
static_assert(sizeof(Half) == 2 && sizeof(BFloat16) == 2);
static_assert(sizeof(QInt4x2) == 1, "qint4 packs two values in one byte");

inline QUANTA_HOST_DEVICE int8_t LoadQInt4(const uint8_t* base, int64_t i) {
  uint8_t nibble = (i & 1) ? (base[i >> 1] >> 4) : (base[i >> 1] & 0xF);
  return static_cast<int8_t>(static_cast<int8_t>(nibble << 4) >> 4);  // sign-extend
}
inline QUANTA_HOST_DEVICE void StoreQInt4(uint8_t* base, int64_t i, int8_t v) {
  uint8_t nibble = static_cast<uint8_t>(v) & 0xF;
  uint8_t& byte = base[i >> 1];
  byte = (i & 1) ? static_cast<uint8_t>((byte & 0x0F) | (nibble << 4))
                 : static_cast<uint8_t>((byte & 0xF0) | nibble);
}

inline QUANTA_HOST_DEVICE uint32_t FloatBits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
inline QUANTA_HOST_DEVICE float BitsToFloat(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

inline QUANTA_HOST_DEVICE BFloat16 BFloat16::FromFloat(float f) {
  uint32_t u = FloatBits(f);
  if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x007FFFFFu)) {
    return BFloat16{static_cast<uint16_t>((u >> 16) | 0x0040)};  // quiet NaN
  }
  u += 0x7FFFu + ((u >> 16) & 1u);  // round to nearest even
  return BFloat16{static_cast<uint16_t>(u >> 16)};
}
inline QUANTA_HOST_DEVICE float BFloat16::ToFloat() const {
  return BitsToFloat(static_cast<uint32_t>(bits) << 16);
}

inline QUANTA_HOST_DEVICE Half Half::FromFloat(float f) {
  uint32_t u = FloatBits(f);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  uint32_t abs = u & 0x7FFFFFFFu;
  if (abs >= 0x7F800000u) {  // inf or NaN
    return Half{static_cast<uint16_t>(sign | 0x7C00u | (abs > 0x7F800000u ? 0x200u : 0u))};
  }
  if (abs >= 0x477FF000u) return Half{static_cast<uint16_t>(sign | 0x7C00u)};  // rounds to inf
  if (abs < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
    if (abs < 0x33000000u) return Half{sign};  // below half of the smallest subnormal
    int exp = static_cast<int>(abs >> 23);
    uint32_t mant = (abs & 0x7FFFFFu) | 0x800000u;
    int shift = 126 - exp;  // 113 - exp + 13
    uint32_t half_mant = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (half_mant & 1u))) ++half_mant;
    return Half{static_cast<uint16_t>(sign | half_mant)};
  }
  uint32_t h = ((abs - 0x38000000u) >> 13);  // rebias exponent 127 -> 15
  uint32_t rem = abs & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return Half{static_cast<uint16_t>(sign | h)};
}
inline QUANTA_HOST_DEVICE float Half::ToFloat() const {
  uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  uint32_t exp = (bits >> 10) & 0x1Fu;
  uint32_t mant = bits & 0x3FFu;
  if (exp == 0x1F) return BitsToFloat(sign | 0x7F800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0) return BitsToFloat(sign);
    float f = static_cast<float>(mant) * (1.0f / 16777216.0f);  // mant * 2^-24
    return sign ? -f : f;
  }
  return BitsToFloat(sign | ((exp + 112u) << 23) | (mant << 13));
}

// ---- dtype <-> C++ type ------------------------------------------------------

template <typename T>
struct TypeTag {
  using type = T;
};

// The C++ storage type of each non-packed dtype. Quantized dtypes store their
// integer values: qint8 as int8_t, quint8 as uint8_t, qint4 as QInt4x2 nibbles.
template <DType D> struct StorageOf;
template <> struct StorageOf<DType::kF32> { using type = float; };
template <> struct StorageOf<DType::kF64> { using type = double; };
template <> struct StorageOf<DType::kF16> { using type = Half; };
template <> struct StorageOf<DType::kBF16> { using type = BFloat16; };
template <> struct StorageOf<DType::kI32> { using type = int32_t; };
template <> struct StorageOf<DType::kI64> { using type = int64_t; };
template <> struct StorageOf<DType::kI8> { using type = int8_t; };
template <> struct StorageOf<DType::kU8> { using type = uint8_t; };
template <> struct StorageOf<DType::kBool> { using type = bool; };

template <typename T> inline constexpr DType kDTypeOf = DType::kF32;
template <> inline constexpr DType kDTypeOf<float> = DType::kF32;
template <> inline constexpr DType kDTypeOf<double> = DType::kF64;
template <> inline constexpr DType kDTypeOf<Half> = DType::kF16;
template <> inline constexpr DType kDTypeOf<BFloat16> = DType::kBF16;
template <> inline constexpr DType kDTypeOf<int32_t> = DType::kI32;
template <> inline constexpr DType kDTypeOf<int64_t> = DType::kI64;
template <> inline constexpr DType kDTypeOf<int8_t> = DType::kI8;
template <> inline constexpr DType kDTypeOf<uint8_t> = DType::kU8;
template <> inline constexpr DType kDTypeOf<bool> = DType::kBool;

// The type arithmetic on T is carried out in: f16/bf16 compute in f32, bool as
// int32, everything else in itself.
template <typename T> struct ComputeOf { using type = T; };
template <> struct ComputeOf<Half> { using type = float; };
template <> struct ComputeOf<BFloat16> { using type = float; };
template <> struct ComputeOf<bool> { using type = int32_t; };
template <typename T> using Compute = typename ComputeOf<T>::type;

// Converts between storage and compute types (f16/bf16 round to nearest even).
template <typename To, typename From>
QUANTA_HOST_DEVICE inline To Convert(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_same_v<From, Half> || std::is_same_v<From, BFloat16>) {
    return Convert<To>(v.ToFloat());
  } else if constexpr (std::is_same_v<To, Half>) {
    return Half::FromFloat(static_cast<float>(v));
  } else if constexpr (std::is_same_v<To, BFloat16>) {
    return BFloat16::FromFloat(static_cast<float>(v));
  } else if constexpr (std::is_same_v<To, bool>) {
    return v != From(0);
  } else {
    return static_cast<To>(v);
  }
}

// Calls f(TypeTag<T>{}) with the storage type of a non-quantized dtype. Kernels are
// written once as a template over T and reach every dtype through this switch
// (not the minifloats: Note [Storage-only dtypes]).
template <typename F>
decltype(auto) VisitDType(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kF32: return f(TypeTag<float>{});
    case DType::kF64: return f(TypeTag<double>{});
    case DType::kF16: return f(TypeTag<Half>{});
    case DType::kBF16: return f(TypeTag<BFloat16>{});
    case DType::kI32: return f(TypeTag<int32_t>{});
    case DType::kI64: return f(TypeTag<int64_t>{});
    case DType::kI8: case DType::kQInt8: return f(TypeTag<int8_t>{});
    case DType::kU8: case DType::kQUInt8: return f(TypeTag<uint8_t>{});
    case DType::kBool: return f(TypeTag<bool>{});
    case DType::kQInt4: return f(TypeTag<QInt4x2>{});
    case DType::kF8E4M3: case DType::kF8E5M2: case DType::kF8E8M0:
    case DType::kF6E2M3: case DType::kF6E3M2: case DType::kF4E2M1: ThrowStorageOnly(dtype);
  }
  return f(TypeTag<float>{});
}

}  // namespace quanta
