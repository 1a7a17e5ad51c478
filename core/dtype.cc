// The dtype table. A new dtype is one row here plus its storage struct.
#include "core/dtype.h"

#include <array>

namespace quanta {
namespace {

constexpr std::array<DTypeInfo, kNumDTypes> kTable = {{
    // dtype          name      bits float  quant  signed qmin         qmax
    {DType::kF32,    "f32",    32,  true,  false, true,  0, 0},
    {DType::kF64,    "f64",    64,  true,  false, true,  0, 0},
    {DType::kF16,    "f16",    16,  true,  false, true,  0, 0},
    {DType::kBF16,   "bf16",   16,  true,  false, true,  0, 0},
    {DType::kI32,    "i32",    32,  false, false, true,  INT32_MIN, INT32_MAX},
    {DType::kI64,    "i64",    64,  false, false, true,  INT64_MIN, INT64_MAX},
    {DType::kI8,     "i8",     8,   false, false, true,  -128, 127},
    {DType::kU8,     "u8",     8,   false, false, false, 0, 255},
    {DType::kBool,   "bool",   8,   false, false, false, 0, 1},
    {DType::kQInt8,  "qint8",  8,   false, true,  true,  -128, 127},
    {DType::kQUInt8, "quint8", 8,   false, true,  false, 0, 255},
    {DType::kQInt4,  "qint4",  4,   false, true,  true,  -8, 7},
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
