// The math of each elementwise op on one value, written once for every backend
// (host and device) and every dtype: kernels apply these through templates.
// C is the compute type (Compute<T> from dtype.h). Not kernels: no loops here.
//
//   float y = GeluFn{}(0.5f);
//   bool lt = LtFn{}(1.0, 2.0);
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "core/dtype.h"

namespace quanta {

#define QUANTA_UNARY_FN(Name, expr)                                   \
  struct Name##Fn {                                                    \
    template <typename C>                                              \
    QUANTA_HOST_DEVICE C operator()(C x) const {                       \
      using std::exp, std::log, std::sqrt, std::abs, std::tanh, std::erf, std::rint; \
      return static_cast<C>(expr);                                     \
    }                                                                  \
  };
QUANTA_UNARY_FN(Neg, -x)
QUANTA_UNARY_FN(Exp, exp(x))
QUANTA_UNARY_FN(Log, log(x))
QUANTA_UNARY_FN(Sqrt, sqrt(x))
QUANTA_UNARY_FN(Rsqrt, C(1) / sqrt(x))
QUANTA_UNARY_FN(Abs, x < C(0) ? -x : x)
QUANTA_UNARY_FN(Relu, x < C(0) ? C(0) : x)  // NaN stays NaN, as in PyTorch
QUANTA_UNARY_FN(Sigmoid, C(1) / (C(1) + exp(-x)))
QUANTA_UNARY_FN(Tanh, tanh(x))
QUANTA_UNARY_FN(Erf, erf(x))
QUANTA_UNARY_FN(Round, rint(x))  // half to even in the default rounding mode
// The exact (erf) GELU: x * Phi(x).
QUANTA_UNARY_FN(Gelu, C(0.5) * x * (C(1) + erf(x * C(0.70710678118654752440))))
#undef QUANTA_UNARY_FN

template <typename C>
QUANTA_HOST_DEVICE inline bool IsNan(C x) {
  if constexpr (std::is_floating_point_v<C>) return x != x;
  return false;
}

#define QUANTA_BINARY_FN(Name, expr)                   \
  struct Name##Fn {                                     \
    template <typename C>                               \
    QUANTA_HOST_DEVICE C operator()(C a, C b) const {   \
      using std::pow;                                   \
      return static_cast<C>(expr);                      \
    }                                                   \
  };
QUANTA_BINARY_FN(Add, a + b)
QUANTA_BINARY_FN(Sub, a - b)
QUANTA_BINARY_FN(Mul, a * b)
QUANTA_BINARY_FN(Div, a / b)
QUANTA_BINARY_FN(Pow, pow(a, b))
// NaN in either operand gives NaN, as torch.maximum / torch.minimum.
QUANTA_BINARY_FN(Maximum, IsNan(a) ? a : IsNan(b) ? b : (a > b ? a : b))
QUANTA_BINARY_FN(Minimum, IsNan(a) ? a : IsNan(b) ? b : (a < b ? a : b))
// ReLU's backward, fused: the gradient a where the input b is positive, else 0
// (NaN inputs pass none), one pass where mask-and-multiply took three
// (torch.ops.aten.threshold_backward(a, b, 0) but for NaN).
QUANTA_BINARY_FN(ThresholdBackward, b > C(0) ? a : C(0))
#undef QUANTA_BINARY_FN

#define QUANTA_COMPARE_FN(Name, expr)                     \
  struct Name##Fn {                                        \
    template <typename C>                                  \
    QUANTA_HOST_DEVICE bool operator()(C a, C b) const {   \
      return expr;                                         \
    }                                                      \
  };
QUANTA_COMPARE_FN(Eq, a == b)
QUANTA_COMPARE_FN(Ne, a != b)
QUANTA_COMPARE_FN(Lt, a < b)
QUANTA_COMPARE_FN(Le, a <= b)
QUANTA_COMPARE_FN(Gt, a > b)
QUANTA_COMPARE_FN(Ge, a >= b)
#undef QUANTA_COMPARE_FN

// Note [One quantization formula]: q = clamp(round_half_even(x / scale) + zero_point,
// quant_min, quant_max) and x = scale * (q - zero_point), computed in the compute
// type of x's dtype (f32 for f32/f16/bf16, f64 for f64), for quantize, dequantize
// and fake quantization on every backend (STYLE.md §8): quantize then dequantize
// equals fake quantization bit for bit.
template <typename C>
QUANTA_HOST_DEVICE inline C QuantizeValue(C x, C scale, C zero_point, C qmin, C qmax) {
  using std::rint;  // ties to even in the default rounding mode; unlike nearbyint, inlined (roundss)
  C q = rint(x / scale) + zero_point;
  return q < qmin ? qmin : (q > qmax ? qmax : q);
}
template <typename C>
QUANTA_HOST_DEVICE inline C DequantizeValue(C q, C scale, C zero_point) {
  return scale * (q - zero_point);
}

// fake_quantize's gradients at one element (see FakeQuantize in core/ops.h):
// of x by STE or EWGS, of the scale by LSQ (unscaled), of the zero point.
template <typename C>
struct FakeQuantGrads {
  C x, scale, zero_point;
};
// kEwgs is a template parameter so that each loop is branch-free and vectorizes.
template <typename C, bool kEwgs>
QUANTA_HOST_DEVICE inline FakeQuantGrads<C> FakeQuantizeGradients(C g, C x, C s, C z, C qmin, C qmax, C delta) {
  using std::rint;
  C xs = x / s, r = rint(xs), q = r + z;
  bool below = q < qmin, above = q > qmax, inside = !below && !above;
  C gx = inside ? g : C(0);
  if constexpr (kEwgs) {
    C sign = C(g > C(0)) - C(g < C(0));
    gx *= C(1) + delta * sign * (xs - r);
  }
  C gs = g * (below ? qmin - z : (above ? qmax - z : r - xs));
  C gz = inside ? C(0) : -g * s;
  return {gx, gs, gz};
}

// Batch norm's value at one element, for every backend (Note [Batch norm
// epilogue] in backends/cpu/reference_normalization.cc). The affine map comes
// from the statistics as stored (S: f32 or f64) so that the backward recomputes
// the forward's values bit for bit; bn(x) = (x - m) * scale + shift in the
// compute type K; the epilogue relu(bn(x) + residual) rounds as the composition
// Relu(Add(y, residual)) does: bn(x) to T, the sum in K and to T, then ReLU.
// The flags are template parameters so that CPU loops stay branch-free.
template <typename K>
struct BnAffine {
  K m, scale, shift;
};
template <typename K, typename S>
QUANTA_HOST_DEVICE inline BnAffine<K> BnAffineOf(S mean, S var, K weight, K bias, double eps) {
  using std::sqrt;
  return {static_cast<K>(static_cast<double>(mean)),
          static_cast<K>(static_cast<double>(weight) / sqrt(static_cast<double>(var) + eps)), bias};
}
template <typename K>
QUANTA_HOST_DEVICE inline K BnNormalize(K x, K m, K scale, K shift) {
  return (x - m) * scale + shift;
}
template <typename T, bool kResidual, bool kRelu, typename K>
QUANTA_HOST_DEVICE inline T BnEpilogue(K normalized, const T* residual, int64_t i) {
  T y = Convert<T>(normalized);
  if constexpr (kResidual) y = Convert<T>(AddFn{}(Convert<K>(y), Convert<K>(residual[i])));
  if constexpr (kRelu) y = Convert<T>(ReluFn{}(Convert<K>(y)));
  return y;
}
// grad_y masked by the epilogue's ReLU at i (its value before ReLU > 0), as
// ThresholdBackward masks it.
template <typename T, bool kResidual, typename K>
QUANTA_HOST_DEVICE inline K BnMaskedGrad(K gy, K normalized, const T* residual, int64_t i) {
  return ThresholdBackwardFn{}(gy, Convert<K>(BnEpilogue<T, kResidual, false>(normalized, residual, i)));
}

}  // namespace quanta
