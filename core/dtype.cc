// The dtype table. A new dtype is one row here plus its storage struct.
#include "core/dtype.h"

#include <array>
#include <string>

#include "core/error.h"
#include "core/minifloat.h"

namespace quanta {
namespace {

constexpr std::array<DTypeInfo, kNumDTypes> kTable = {{
    // dtype          name       bits float  quant  signed qmin       qmax       minifloat
    {DType::kF32,    "f32",     32,  true,  false, true,  0, 0,                false},
    {DType::kF64,    "f64",     64,  true,  false, true,  0, 0,                false},
    {DType::kF16,    "f16",     16,  true,  false, true,  0, 0,                false},
    {DType::kBF16,   "bf16",    16,  true,  false, true,  0, 0,                false},
    {DType::kI32,    "i32",     32,  false, false, true,  INT32_MIN, INT32_MAX, false},
    {DType::kI64,    "i64",     64,  false, false, true,  INT64_MIN, INT64_MAX, false},
    {DType::kI8,     "i8",      8,   false, false, true,  -128, 127,        false},
    {DType::kU8,     "u8",      8,   false, false, false, 0, 255,           false},
    {DType::kBool,   "bool",    8,   false, false, false, 0, 1,             false},
    {DType::kQInt8,  "qint8",   8,   false, true,  true,  -128, 127,        false},
    {DType::kQUInt8, "quint8",  8,   false, true,  false, 0, 255,           false},
    {DType::kQInt4,  "qint4",   4,   false, true,  true,  -8, 7,            false},
    {DType::kF8E4M3, "f8_e4m3", 8,   true,  false, true,  0, 0,             true},
    {DType::kF8E5M2, "f8_e5m2", 8,   true,  false, true,  0, 0,             true},
    {DType::kF8E8M0, "f8_e8m0", 8,   true,  false, false, 0, 0,             true},
    {DType::kF6E2M3, "f6_e2m3", 6,   true,  false, true,  0, 0,             true},
    {DType::kF6E3M2, "f6_e3m2", 6,   true,  false, true,  0, 0,             true},
    {DType::kF4E2M1, "f4_e2m1", 4,   true,  false, true,  0, 0,             true},
}};

// The minifloats' parameters (OCP 8-bit Floating Point Specification (OFP8)
// rev 1.0, table 1; OCP Microscaling Formats (MX) v1.0, tables 2-4).
constexpr std::array<MiniFloatFormat, 6> kMiniFloats = {{
    // dtype          exp man bias  inf    NaN   max code  max
    {DType::kF8E4M3, 4,  3,  7,    false, 0x7F, 0x7E,     448.0f},
    {DType::kF8E5M2, 5,  2,  15,   true,  0x7F, 0x7B,     57344.0f},
    {DType::kF8E8M0, 8,  0,  127,  false, 0xFF, 0xFE,     0x1p127f},
    {DType::kF6E2M3, 2,  3,  1,    false, -1,   0x1F,     7.5f},
    {DType::kF6E3M2, 3,  2,  3,    false, -1,   0x1F,     28.0f},
    {DType::kF4E2M1, 2,  1,  1,    false, -1,   0x7,      6.0f},
}};

constexpr bool TableInOrder() {
  for (int i = 0; i < kNumDTypes; ++i) {
    if (static_cast<int>(kTable[i].dtype) != i) return false;
  }
  return true;
}
static_assert(TableInOrder(), "kTable rows must follow the DType enum");

// Rank in the promotion lattice: bool < u8 < i8 < i32 < i64 < f16/bf16 < f32 < f64.
int Rank(DType d) {
  switch (d) {
    case DType::kBool: return 0;
    case DType::kU8: return 1;
    case DType::kI8: return 2;
    case DType::kI32: return 3;
    case DType::kI64: return 4;
    case DType::kF16: case DType::kBF16: return 5;
    case DType::kF32: return 6;
    case DType::kF64: return 7;
    default: return -1;
  }
}

}  // namespace

const DTypeInfo& Info(DType dtype) { return kTable[static_cast<int>(dtype)]; }

const MiniFloatFormat& MiniFloatOf(DType dtype) {
  for (const MiniFloatFormat& f : kMiniFloats) {
    if (f.dtype == dtype) return f;
  }
  throw Error(std::string("MiniFloatOf: ") + Name(dtype) + " is not a minifloat dtype");
}

void ThrowStorageOnly(DType d) {
  throw Error(std::string(Name(d)) +
              " is a storage-only dtype: no kernel computes in it (convert with to(f32); Note [Storage-only dtypes] "
              "in core/dtype.h)");
}

DType PromoteTypes(DType a, DType b) {
  if (a == b) return a;
  if ((a == DType::kF16 && b == DType::kBF16) || (a == DType::kBF16 && b == DType::kF16)) {
    return DType::kF32;
  }
  // u8 with i8 needs i16, which Quanta lacks: i32 holds both.
  if ((a == DType::kU8 && b == DType::kI8) || (a == DType::kI8 && b == DType::kU8)) {
    return DType::kI32;
  }
  return Rank(a) >= Rank(b) ? a : b;
}

}  // namespace quanta
