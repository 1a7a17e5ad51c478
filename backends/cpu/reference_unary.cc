// Reference kernels: the unary elementwise ops (QUANTA_UNARY_OPS in core/ops.def).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backends/cpu/reference_common.h"

namespace quanta::cpu {
namespace {

// Note [Dense runs]: elementwise kernels get runs (ForEachRunStrided) and
// write the dense case, and the case of an operand broadcast along the run, as
// plain loops over pointers: with -O3 and backends/cpu/vector_math.h they
// vectorize (exp, erf, tanh through glibc's libmvec). The strided loop computes
// the same scalar function per element, so every path gives the same values up
// to libmvec's last-ulp differences from the scalar libm.
template <typename Fn>
void UnaryKernel(const KernelCall& c) {
  const Tensor& x = c.in[0];
  const Tensor& y = c.out[0];
  VisitPlain(c, x.dtype(), [&]<typename T>(TypeTag<T>) {
    const T* xb = static_cast<const T*>(StorageBase(x));
    T* yb = static_cast<T*>(StorageBase(y));
    ForEachRunStrided<2>(y.shape(), {&y, &x}, [&](const std::array<int64_t, 2>& o, int64_t n,
                                                 const std::array<int64_t, 2>& s) {
      T* yp = yb + o[0];
      const T* xp = xb + o[1];
      if (s[0] == 1 && s[1] == 1) {
        for (int64_t j = 0; j < n; ++j) yp[j] = Convert<T>(Fn{}(Convert<Compute<T>>(xp[j])));
      } else {
        for (int64_t j = 0; j < n; ++j) yp[j * s[0]] = Convert<T>(Fn{}(Convert<Compute<T>>(xp[j * s[1]])));
      }
    }, 32768, /*serial=*/false, /*memory_order=*/true);
  });
}

}  // namespace

void AddUnaryKernels(KernelTable& t) {
#define QUANTA_REF_UNARY(Name, str) t[static_cast<int>(Op::k##Name)] = &UnaryKernel<Name##Fn>;
  QUANTA_UNARY_OPS(QUANTA_REF_UNARY)
#undef QUANTA_REF_UNARY
}

}  // namespace quanta::cpu
