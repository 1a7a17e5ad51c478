// Reference kernels: the binary and comparison elementwise ops (Note [Dense runs] in reference_unary.cc).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backends/cpu/reference_common.h"

namespace quanta::cpu {
namespace {

template <typename Fn>
void BinaryKernel(const KernelCall& c) {
  const Tensor& a = c.in[0];
  const Tensor& b = c.in[1];
  const Tensor& y = c.out[0];
  VisitPlain(c, a.dtype(), [&]<typename T>(TypeTag<T>) {
    using C = Compute<T>;
    using R = decltype(Fn{}(C{}, C{}));
    using Out = std::conditional_t<std::is_same_v<R, bool>, bool, T>;  // compare ops write bool
    const T *ab = static_cast<const T*>(StorageBase(a)), *bb = static_cast<const T*>(StorageBase(b));
    Out* yb = static_cast<Out*>(StorageBase(y));
    ForEachRunStrided<3>(y.shape(), {&y, &a, &b}, [&](const std::array<int64_t, 3>& o, int64_t n,
                                                     const std::array<int64_t, 3>& s) {
      Out* yp = yb + o[0];
      const T *ap = ab + o[1], *bp = bb + o[2];
      if (s[0] == 1 && s[1] == 1 && s[2] == 1) {
        for (int64_t j = 0; j < n; ++j) yp[j] = Convert<Out>(Fn{}(Convert<C>(ap[j]), Convert<C>(bp[j])));
      } else if (s[0] == 1 && s[1] == 1 && s[2] == 0) {  // b broadcast along the run: x - mean
        const C bv = Convert<C>(bp[0]);
        for (int64_t j = 0; j < n; ++j) yp[j] = Convert<Out>(Fn{}(Convert<C>(ap[j]), bv));
      } else if (s[0] == 1 && s[1] == 0 && s[2] == 1) {
        const C av = Convert<C>(ap[0]);
        for (int64_t j = 0; j < n; ++j) yp[j] = Convert<Out>(Fn{}(av, Convert<C>(bp[j])));
      } else {
        for (int64_t j = 0; j < n; ++j) {
          yp[j * s[0]] = Convert<Out>(Fn{}(Convert<C>(ap[j * s[1]]), Convert<C>(bp[j * s[2]])));
        }
      }
    }, 32768, /*serial=*/false, /*memory_order=*/true);
  });
}

}  // namespace

void AddBinaryKernels(KernelTable& t) {
#define QUANTA_REF_BINARY(Name, str) t[static_cast<int>(Op::k##Name)] = &BinaryKernel<Name##Fn>;
  QUANTA_BINARY_OPS(QUANTA_REF_BINARY)
  QUANTA_COMPARE_OPS(QUANTA_REF_BINARY)
#undef QUANTA_REF_BINARY
}

}  // namespace quanta::cpu
