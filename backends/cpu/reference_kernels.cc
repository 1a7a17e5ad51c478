// Reference kernels: one template per op family, instantiated over dtypes through
// VisitDType. Floating sums and dot products accumulate in f64, integer ones in i64.
#include "backends/cpu/reference_kernels.h"

#include <cmath>
#include <limits>

#include "backends/cpu/strided.h"
#include "backends/cpu/vector_math.h"
#include "core/generator.h"
#include "core/ops.h"
#include "core/scalar_ops.h"

namespace quanta::cpu {
namespace {

// Visits plain (non-quantized) dtypes; throws for the rest.
template <typename F>
void VisitPlain(const KernelCall& c, DType dtype, F&& f) {
  QUANTA_CHECK(!IsQuantized(dtype), OpName(c.op), ": no kernel for quantized dtype ", Name(dtype));
  VisitDType(dtype, [&]<typename T>(TypeTag<T>) {
    if constexpr (!std::is_same_v<T, QInt4x2>) f(TypeTag<T>{});
  });
}

template <typename T>
using Acc = std::conditional_t<std::is_floating_point_v<Compute<T>>, double, int64_t>;

// ---- elementwise --------------------------------------------------------------

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
    });
  });
}

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
    });
  });
}

void WhereKernel(const KernelCall& c) {
  const Tensor& cond = c.in[0];
  const Tensor& a = c.in[1];
  const Tensor& b = c.in[2];
  const Tensor& y = c.out[0];
  VisitPlain(c, a.dtype(), [&]<typename T>(TypeTag<T>) {
    const void *cp = StorageBase(cond), *ap = StorageBase(a), *bp = StorageBase(b);
    void* yp = StorageBase(y);
    ForEachStrided<4>(y.shape(), {&y, &cond, &a, &b}, [&](const std::array<int64_t, 4>& o) {
      StoreAt<T>(yp, o[0], LoadAt<bool>(cp, o[1]) ? LoadAt<T>(ap, o[2]) : LoadAt<T>(bp, o[3]));
    });
  });
}

// Copy with cast. Quantized dtypes copy their integer values (to the same
// quantized dtype, or to a plain integer dtype for IntRepr).
void CopyKernel(const KernelCall& c) {
  const Tensor& x = c.in[0];
  const Tensor& y = c.out[0];
  if (x.dtype() == y.dtype() && x.is_contiguous() && y.is_contiguous() &&
      x.dtype() != DType::kQInt4) {
    std::memcpy(y.raw_data(), x.raw_data(), StorageBytes(x.dtype(), x.numel()));
    return;
  }
  VisitDType(x.dtype(), [&]<typename S>(TypeTag<S>) {
    VisitDType(y.dtype(), [&]<typename D>(TypeTag<D>) {
      const void* xp = StorageBase(x);
      void* yp = StorageBase(y);
      ForEachStrided<2>(
          y.shape(), {&y, &x},
          [&](const std::array<int64_t, 2>& o) {
            StoreAt<D>(yp, o[0], Convert<Elem<D>>(LoadAt<S>(xp, o[1])));
          },
          32768, /*serial=*/std::is_same_v<D, QInt4x2>);
    });
  });
}

void FillKernel(const KernelCall& c) {
  const Tensor& y = c.out[0];
  VisitPlain(c, y.dtype(), [&]<typename T>(TypeTag<T>) {
    T v = Convert<T>(c.attrs.scalar);
    void* yp = StorageBase(y);
    ForEachStrided<1>(y.shape(), {&y}, [&](const std::array<int64_t, 1>& o) { StoreAt<T>(yp, o[0], v); });
  });
}

void ArangeKernel(const KernelCall& c) {
  const Tensor& y = c.out[0];
  VisitPlain(c, y.dtype(), [&]<typename T>(TypeTag<T>) {
    void* yp = StorageBase(y);
    for (int64_t i = 0; i < y.numel(); ++i) {
      StoreAt<T>(yp, y.offset() + i * y.stride(0), Convert<T>(c.attrs.scalar + c.attrs.scalar2 * static_cast<double>(i)));
    }
  });
}

// Random values: element i of the (contiguous) output uses Philox counter offset+i.
template <typename Draw>
void RandomKernel(const KernelCall& c, Draw draw) {
  const Tensor& y = c.out[0];
  VisitPlain(c, y.dtype(), [&]<typename T>(TypeTag<T>) {
    auto* yp = static_cast<T*>(y.raw_data());
    ParallelFor(0, y.numel(), 16384, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) yp[i] = Convert<T>(draw(c.attrs.offset + i));
    });
  });
}
void UniformKernel(const KernelCall& c) {
  const OpAttrs& a = c.attrs;
  RandomKernel(c, [&](uint64_t n) { return a.scalar + (a.scalar2 - a.scalar) * PhiloxUniform(a.seed, n); });
}
void NormalKernel(const KernelCall& c) {
  const OpAttrs& a = c.attrs;
  RandomKernel(c, [&](uint64_t n) { return a.scalar + a.scalar2 * PhiloxNormal(a.seed, n); });
}
void BernoulliKernel(const KernelCall& c) {
  const OpAttrs& a = c.attrs;
  RandomKernel(c, [&](uint64_t n) { return PhiloxUniform(a.seed, n) < a.scalar ? 1.0 : 0.0; });
}

// ---- reductions ---------------------------------------------------------------

// Splits x into the outer view (reduced dims at size 1, aligned with the
// keepdim-shaped output) and the inner view over the reduced dims alone.
struct ReductionViews {
  Tensor outer, inner;
};
ReductionViews SplitForReduction(const Tensor& x, const std::vector<int64_t>& dims) {
  Shape outer_shape = x.shape(), inner_shape;
  Strides inner_strides;
  for (int64_t d : dims) {
    outer_shape[d] = 1;
    inner_shape.push_back(x.size(d));
    inner_strides.push_back(x.stride(d));
  }
  return {x.AsStrided(outer_shape, x.strides(), x.offset()),
          x.AsStrided(inner_shape, inner_strides, 0)};
}

struct SumReducer {
  double fsum = 0;
  int64_t isum = 0;
  template <typename T> void Start() {}
  template <typename C> void Add(C v, int64_t) {
    if constexpr (std::is_floating_point_v<C>) fsum += v; else isum += v;
  }
  template <typename Out> auto Result() const {
    if constexpr (std::is_floating_point_v<Compute<Out>>) return fsum; else return isum;
  }
};

template <bool kMax>
struct ExtremeReducer {
  double best = 0;
  bool any = false;
  template <typename T> void Start() {}
  template <typename C> void Add(C v, int64_t) {
    double d = static_cast<double>(v);
    if (any && std::isnan(best)) return;  // NaN propagates, as torch.max
    if (!any || std::isnan(d) || (kMax ? d > best : d < best)) best = d;
    any = true;
  }
  template <typename Out> double Result() const { return best; }
};

struct ArgmaxReducer {
  double best = 0;
  int64_t best_index = -1;
  template <typename T> void Start() {}
  template <typename C> void Add(C v, int64_t i) {
    double d = static_cast<double>(v);
    if (best_index < 0 || (!std::isnan(best) && (std::isnan(d) || d > best))) {
      best = d;
      best_index = i;
    }
  }
  template <typename Out> int64_t Result() const { return best_index; }
};

template <typename Reducer>
void ReduceKernel(const KernelCall& c) {
  const Tensor& x = c.in[0];
  const Tensor& y = c.out[0];
  if (x.numel() == 0) {  // an empty reduction (the frontend allows it for sum only)
    VisitPlain(c, y.dtype(), [&]<typename Out>(TypeTag<Out>) {
      Reducer empty;
      void* yp = StorageBase(y);
      ForEachStrided<1>(y.shape(), {&y}, [&](const std::array<int64_t, 1>& o) {
        StoreAt<Out>(yp, o[0], Convert<Out>(empty.template Result<Out>()));
      });
    });
    return;
  }
  ReductionViews v = SplitForReduction(x, c.attrs.dims);
  // Note [Dense reductions]: a reduction over one dense run (softmax's and layer
  // norm's last dim) of f32/f64 runs as a plain loop: sums in 8 f64 partial
  // sums (a different order from the serial loop, no less accurate), max and min
  // with NaN tracked beside the comparison. The result is the serial loop's but
  // for the last bits of a sum.
  const LoopGeometry<1> inner_geometry(v.inner.shape(), {&v.inner});
  const bool dense = inner_geometry.sizes.size() == 1 && inner_geometry.strides[0][0] == 1;
  constexpr bool kSum = std::is_same_v<Reducer, SumReducer>;
  constexpr bool kExtreme = std::is_same_v<Reducer, ExtremeReducer<true>> || std::is_same_v<Reducer, ExtremeReducer<false>>;
  if (dense && (kSum || kExtreme) && (x.dtype() == DType::kF32 || x.dtype() == DType::kF64)) {
    const int64_t n = v.inner.numel();
    VisitDType(x.dtype(), [&]<typename T>(TypeTag<T>) {
      if constexpr (std::is_floating_point_v<T>) {
        const T* xb = static_cast<const T*>(StorageBase(x));
        VisitPlain(c, y.dtype(), [&]<typename Out>(TypeTag<Out>) {
          void* yp = StorageBase(y);
          ForEachStrided<2>(y.shape(), {&y, &v.outer}, [&](const std::array<int64_t, 2>& o) {
            const T* p = xb + o[1];
            double r;
            if constexpr (kSum) {
              double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
              int64_t j = 0;
              for (; j + 8 <= n; j += 8) {
                for (int k = 0; k < 8; ++k) part[k] += static_cast<double>(p[j + k]);
              }
              for (; j < n; ++j) part[0] += static_cast<double>(p[j]);
              r = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
            } else {
              constexpr bool kMax = std::is_same_v<Reducer, ExtremeReducer<true>>;
              T best = p[0];
              bool nan = false;
              for (int64_t j = 0; j < n; ++j) {
                nan |= p[j] != p[j];
                best = kMax ? (p[j] > best ? p[j] : best) : (p[j] < best ? p[j] : best);
              }
              r = nan ? std::numeric_limits<double>::quiet_NaN() : static_cast<double>(best);
            }
            StoreAt<Out>(yp, o[0], Convert<Out>(r));
          }, /*grain=*/std::max<int64_t>(1, 32768 / std::max<int64_t>(1, n)));
        });
      }
    });
    return;
  }
  VisitPlain(c, x.dtype(), [&]<typename T>(TypeTag<T>) {
    const void* xp = StorageBase(x);
    VisitPlain(c, y.dtype(), [&]<typename Out>(TypeTag<Out>) {
      void* yp = StorageBase(y);
      ForEachStrided<2>(y.shape(), {&y, &v.outer}, [&](const std::array<int64_t, 2>& o) {
        Reducer r;
        r.template Start<T>();
        int64_t i = 0;
        // Inner indices are relative to the outer element's storage index.
        ForEachStrided<1>(v.inner.shape(), {&v.inner}, [&](const std::array<int64_t, 1>& in) {
          r.Add(Convert<Compute<T>>(LoadAt<T>(xp, o[1] + in[0])), i++);
        }, 1, /*serial=*/true);
        StoreAt<Out>(yp, o[0], Convert<Out>(r.template Result<Out>()));
      }, /*grain=*/std::max<int64_t>(1, 32768 / std::max<int64_t>(1, v.inner.numel())));
    });
  });
}

// ---- matmul and convolution -----------------------------------------------------

// a (..., M, K), b (..., K, N) of one rank; batch dims equal to y's or 1.
// y (..., M, N) contiguous.
void MatmulKernel(const KernelCall& c) {
  const Tensor& a = c.in[0];
  const Tensor& b = c.in[1];
  const Tensor& y = c.out[0];
  int rank = y.dim();
  int64_t M = y.size(-2), N = y.size(-1), K = a.size(-1);
  int64_t batch = y.numel() / std::max<int64_t>(M * N, 1);
  VisitPlain(c, a.dtype(), [&]<typename T>(TypeTag<T>) {
    const void *ap = StorageBase(a), *bp = StorageBase(b);
    auto* yp = static_cast<T*>(y.raw_data());
    ParallelFor(0, batch * M, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bm = begin; bm < end; ++bm) {
        int64_t bi = bm / M, m = bm % M;
        int64_t a_off = a.offset(), b_off = b.offset(), rem = bi;
        for (int d = rank - 3; d >= 0; --d) {
          int64_t idx = rem % y.size(d);
          rem /= y.size(d);
          if (a.size(d) != 1) a_off += idx * a.stride(d);
          if (b.size(d) != 1) b_off += idx * b.stride(d);
        }
        for (int64_t n = 0; n < N; ++n) {
          Acc<T> acc = 0;
          for (int64_t k = 0; k < K; ++k) {
            acc += static_cast<Acc<T>>(Convert<Compute<T>>(LoadAt<T>(ap, a_off + m * a.stride(-2) + k * a.stride(-1)))) *
                   static_cast<Acc<T>>(Convert<Compute<T>>(LoadAt<T>(bp, b_off + k * b.stride(-2) + n * b.stride(-1))));
          }
          yp[(bi * M + m) * N + n] = Convert<T>(acc);
        }
      }
    });
  });
}

// x (N, C, H, W), w (O, C/G, KH, KW), optional bias (O); all contiguous.
// y (N, O, OH, OW).
void Conv2dKernel(const KernelCall& c) {
  const Tensor& x = c.in[0];
  const Tensor& w = c.in[1];
  const Tensor* bias = c.in.size() > 2 ? &c.in[2] : nullptr;
  const Tensor& y = c.out[0];
  const OpAttrs& at = c.attrs;
  int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  int64_t O = w.size(0), CG = w.size(1), KH = w.size(2), KW = w.size(3);
  int64_t OH = y.size(2), OW = y.size(3), G = at.groups, OG = O / G;
  VisitPlain(c, x.dtype(), [&]<typename T>(TypeTag<T>) {
    const T* xp = static_cast<const T*>(x.raw_data());
    const T* wp = static_cast<const T*>(w.raw_data());
    const T* bp = bias ? static_cast<const T*>(bias->raw_data()) : nullptr;
    T* yp = static_cast<T*>(y.raw_data());
    ParallelFor(0, N * O, 1, [&](int64_t begin, int64_t end) {
      for (int64_t no = begin; no < end; ++no) {
        int64_t n = no / O, o = no % O, g = o / OG;
        for (int64_t oh = 0; oh < OH; ++oh) {
          for (int64_t ow = 0; ow < OW; ++ow) {
            double acc = bp ? static_cast<double>(Convert<Compute<T>>(bp[o])) : 0.0;
            for (int64_t cg = 0; cg < CG; ++cg) {
              int64_t ch = g * CG + cg;
              for (int64_t kh = 0; kh < KH; ++kh) {
                int64_t ih = oh * at.stride[0] - at.padding[0] + kh * at.dilation[0];
                if (ih < 0 || ih >= H) continue;
                for (int64_t kw = 0; kw < KW; ++kw) {
                  int64_t iw = ow * at.stride[1] - at.padding[1] + kw * at.dilation[1];
                  if (iw < 0 || iw >= W) continue;
                  acc += static_cast<double>(Convert<Compute<T>>(xp[((n * C + ch) * H + ih) * W + iw])) *
                         static_cast<double>(Convert<Compute<T>>(wp[((o * CG + cg) * KH + kh) * KW + kw]));
                }
              }
            }
            yp[((n * O + o) * OH + oh) * OW + ow] = Convert<T>(acc);
          }
        }
      }
    });
  });
}

// ---- indexing -------------------------------------------------------------------

int64_t CheckedIndex(const KernelCall& c, int64_t i, int64_t size) {
  QUANTA_CHECK(i >= 0 && i < size, OpName(c.op), ": index ", i, " out of range for dim ",
               c.attrs.dims[0], " of size ", size, " (", c.in[0].Describe(), ")");
  return i;
}

// torch.gather: y[..i..] = x[..index[..i..]..] along dim d; y has index's shape.
void GatherKernel(const KernelCall& c) {
  const Tensor& x = c.in[0];
  const Tensor& index = c.in[1];
  const Tensor& y = c.out[0];
  int64_t d = c.attrs.dims[0];
  Strides xs = x.strides();
  xs[d] = 0;
  Tensor x_base = x.AsStrided(y.shape(), xs, x.offset());
  const auto* ip = static_cast<const int64_t*>(StorageBase(index));
  const int64_t size_d = x.size(d), stride_d = x.stride(d);
  VisitDType(x.dtype(), [&]<typename T>(TypeTag<T>) {
    const void* xp = StorageBase(x);
    void* yp = StorageBase(y);
    if constexpr (!std::is_same_v<T, QInt4x2>) {
      // Runs along which the index is constant (index_select and embedding rows:
      // the index broadcast over the row) check it once and copy the run.
      ForEachRunStrided<3>(y.shape(), {&y, &x_base, &index}, [&](const std::array<int64_t, 3>& o, int64_t n,
                                                                const std::array<int64_t, 3>& s) {
        T* yr = static_cast<T*>(yp) + o[0];
        const T* xr = static_cast<const T*>(xp) + o[1];
        if (s[2] == 0) {
          const T* src = xr + CheckedIndex(c, ip[o[2]], size_d) * stride_d;
          for (int64_t j = 0; j < n; ++j) yr[j * s[0]] = src[j * s[1]];
        } else {
          for (int64_t j = 0; j < n; ++j) yr[j * s[0]] = xr[j * s[1] + CheckedIndex(c, ip[o[2] + j * s[2]], size_d) * stride_d];
        }
      });
    } else {
      ForEachStrided<3>(y.shape(), {&y, &x_base, &index}, [&](const std::array<int64_t, 3>& o) {
        int64_t i = CheckedIndex(c, ip[o[2]], size_d);
        StoreAt<T>(yp, o[0], LoadAt<T>(xp, o[1] + i * stride_d));
      }, 32768, /*serial=*/true);
    }
  });
}

// grad_out (N, O, OH, OW), w (O, C/G, KH, KW) -> grad_in (N, C, H, W): the
// transpose of Conv2dKernel's loop, accumulating per input element.
void Conv2dBackwardInputKernel(const KernelCall& c) {
  const Tensor& gy = c.in[0];
  const Tensor& w = c.in[1];
  const Tensor& gx = c.out[0];
  const OpAttrs& at = c.attrs;
  int64_t N = gx.size(0), C = gx.size(1), H = gx.size(2), W = gx.size(3);
  int64_t O = w.size(0), CG = w.size(1), KH = w.size(2), KW = w.size(3);
  int64_t OH = gy.size(2), OW = gy.size(3), G = at.groups, OG = O / G;
  VisitPlain(c, gy.dtype(), [&]<typename T>(TypeTag<T>) {
    const T* gyp = static_cast<const T*>(gy.raw_data());
    const T* wp = static_cast<const T*>(w.raw_data());
    T* gxp = static_cast<T*>(gx.raw_data());
    ParallelFor(0, N * C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t nc = begin; nc < end; ++nc) {
        int64_t n = nc / C, ch = nc % C, g = ch / CG, cg = ch % CG;
        for (int64_t ih = 0; ih < H; ++ih) {
          for (int64_t iw = 0; iw < W; ++iw) {
            double acc = 0;
            for (int64_t kh = 0; kh < KH; ++kh) {
              int64_t th = ih + at.padding[0] - kh * at.dilation[0];
              if (th < 0 || th % at.stride[0] != 0 || th / at.stride[0] >= OH) continue;
              for (int64_t kw = 0; kw < KW; ++kw) {
                int64_t tw = iw + at.padding[1] - kw * at.dilation[1];
                if (tw < 0 || tw % at.stride[1] != 0 || tw / at.stride[1] >= OW) continue;
                int64_t oh = th / at.stride[0], ow = tw / at.stride[1];
                for (int64_t og = 0; og < OG; ++og) {
                  int64_t o = g * OG + og;
                  acc += static_cast<double>(Convert<Compute<T>>(gyp[((n * O + o) * OH + oh) * OW + ow])) *
                         static_cast<double>(Convert<Compute<T>>(wp[((o * CG + cg) * KH + kh) * KW + kw]));
                }
              }
            }
            gxp[((n * C + ch) * H + ih) * W + iw] = Convert<T>(acc);
          }
        }
      }
    });
  });
}

// grad_out (N, O, OH, OW), x (N, C, H, W) -> grad_w (O, C/G, KH, KW).
void Conv2dBackwardWeightKernel(const KernelCall& c) {
  const Tensor& gy = c.in[0];
  const Tensor& x = c.in[1];
  const Tensor& gw = c.out[0];
  const OpAttrs& at = c.attrs;
  int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  int64_t O = gw.size(0), CG = gw.size(1), KH = gw.size(2), KW = gw.size(3);
  int64_t OH = gy.size(2), OW = gy.size(3), G = at.groups, OG = O / G;
  VisitPlain(c, gy.dtype(), [&]<typename T>(TypeTag<T>) {
    const T* gyp = static_cast<const T*>(gy.raw_data());
    const T* xp = static_cast<const T*>(x.raw_data());
    T* gwp = static_cast<T*>(gw.raw_data());
    ParallelFor(0, O * CG, 1, [&](int64_t begin, int64_t end) {
      for (int64_t oc = begin; oc < end; ++oc) {
        int64_t o = oc / CG, cg = oc % CG, ch = (o / OG) * CG + cg;
        for (int64_t kh = 0; kh < KH; ++kh) {
          for (int64_t kw = 0; kw < KW; ++kw) {
            double acc = 0;
            for (int64_t n = 0; n < N; ++n) {
              for (int64_t oh = 0; oh < OH; ++oh) {
                int64_t ih = oh * at.stride[0] - at.padding[0] + kh * at.dilation[0];
                if (ih < 0 || ih >= H) continue;
                for (int64_t ow = 0; ow < OW; ++ow) {
                  int64_t iw = ow * at.stride[1] - at.padding[1] + kw * at.dilation[1];
                  if (iw < 0 || iw >= W) continue;
                  acc += static_cast<double>(Convert<Compute<T>>(gyp[((n * O + o) * OH + oh) * OW + ow])) *
                         static_cast<double>(Convert<Compute<T>>(xp[((n * C + ch) * H + ih) * W + iw]));
                }
              }
            }
            gwp[((o * CG + cg) * KH + kh) * KW + kw] = Convert<T>(acc);
          }
        }
      }
    });
  });
}

// x (N, C, H, W) -> y, argmax (N, C, OH, OW); argmax is h * W + w in the plane.
// x (N, C, H, W) contiguous or channels-last; y and the argmax indices (flat ih *
// W + iw per plane) in the same layout. Window bounds are worked out once per
// output row and column, so the inner loops carry no checks; channels-last runs
// the innermost loop over C (contiguous).
void MaxPool2dKernel(const KernelCall& c) {
  const Tensor& x = c.in[0];
  const Tensor& y = c.out[0];
  const Tensor& idx = c.out[1];
  const OpAttrs& at = c.attrs;
  int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), OH = y.size(2), OW = y.size(3);
  QUANTA_CHECK(x.dtype() != DType::kQInt4, "max_pool2d: no kernel for qint4");
  // The taps of output position o along one axis: first valid tap and count.
  auto taps = [](int64_t out, int64_t size, int64_t k, int64_t stride, int64_t pad, int64_t dil) {
    std::vector<std::pair<int64_t, int64_t>> t(out);
    for (int64_t o = 0; o < out; ++o) {
      int64_t first = 0, count = 0;
      for (int64_t j = 0; j < k; ++j) {
        int64_t i = o * stride - pad + j * dil;
        if (i < 0 || i >= size) continue;
        if (count == 0) first = j;
        ++count;
      }
      t[o] = {first, count};
    }
    return t;
  };
  auto th = taps(OH, H, at.kernel[0], at.stride[0], at.padding[0], at.dilation[0]);
  auto tw = taps(OW, W, at.kernel[1], at.stride[1], at.padding[1], at.dilation[1]);
  bool channels_last = x.is_channels_last() && !x.is_contiguous();
  // Quantized values (scale > 0) order as their integers: the max is taken on them.
  VisitDType(x.dtype(), [&]<typename T>(TypeTag<T>) {
    if constexpr (!std::is_same_v<T, QInt4x2>) {
      using C_ = Compute<T>;
      auto better = [](C_ v, C_ best) {
        if constexpr (std::is_floating_point_v<C_>) return v > best || (std::isnan(v) && !std::isnan(best));
        return v > best;
      };
      const T* xp = static_cast<const T*>(x.raw_data());
      T* yp = static_cast<T*>(y.raw_data());
      int64_t* ip = static_cast<int64_t*>(idx.raw_data());
      if (channels_last) {
        ParallelFor(0, N * OH, 1, [&](int64_t begin, int64_t end) {
          std::vector<C_> best(C);
          for (int64_t r = begin; r < end; ++r) {
            int64_t n = r / OH, oh = r % OH;
            for (int64_t ow = 0; ow < OW; ++ow) {
              T* yrow = yp + ((n * OH + oh) * OW + ow) * C;
              int64_t* irow = ip + ((n * OH + oh) * OW + ow) * C;
              bool first = true;
              for (int64_t a = 0; a < th[oh].second; ++a) {
                int64_t ih = oh * at.stride[0] - at.padding[0] + (th[oh].first + a) * at.dilation[0];
                for (int64_t b = 0; b < tw[ow].second; ++b) {
                  int64_t iw = ow * at.stride[1] - at.padding[1] + (tw[ow].first + b) * at.dilation[1];
                  const T* xrow = xp + ((n * H + ih) * W + iw) * C;
                  for (int64_t ch = 0; ch < C; ++ch) {
                    C_ v = Convert<C_>(xrow[ch]);
                    if (first || better(v, best[ch])) {
                      best[ch] = v;
                      yrow[ch] = xrow[ch];
                      irow[ch] = ih * W + iw;
                    }
                  }
                  first = false;
                }
              }
            }
          }
        });
        return;
      }
      ParallelFor(0, N * C, 1, [&](int64_t begin, int64_t end) {
        for (int64_t p = begin; p < end; ++p) {
          const T* plane = xp + p * H * W;
          for (int64_t oh = 0; oh < OH; ++oh) {
            for (int64_t ow = 0; ow < OW; ++ow) {
              C_ best{};
              int64_t best_i = -1;
              for (int64_t a = 0; a < th[oh].second; ++a) {
                int64_t ih = oh * at.stride[0] - at.padding[0] + (th[oh].first + a) * at.dilation[0];
                for (int64_t b = 0; b < tw[ow].second; ++b) {
                  int64_t i = ih * W + ow * at.stride[1] - at.padding[1] + (tw[ow].first + b) * at.dilation[1];
                  C_ v = Convert<C_>(plane[i]);
                  if (best_i < 0 || better(v, best)) {
                    best = v;
                    best_i = i;
                  }
                }
              }
              yp[(p * OH + oh) * OW + ow] = plane[best_i];
              ip[(p * OH + oh) * OW + ow] = best_i;
            }
          }
        }
      });
    }
  });
}

// grad_out, indices (N, C, OH, OW) -> grad_in (N, C, H, W): each gradient goes
// to its window's argmax; overlapping windows add up.
void MaxPool2dBackwardKernel(const KernelCall& c) {
  const Tensor& gy = c.in[0];
  const Tensor& idx = c.in[1];
  const Tensor& gx = c.out[0];
  int64_t NC = gx.size(0) * gx.size(1), HW = gx.size(2) * gx.size(3), OHW = gy.size(2) * gy.size(3);
  VisitPlain(c, gy.dtype(), [&]<typename T>(TypeTag<T>) {
    const T* gyp = static_cast<const T*>(gy.raw_data());
    const int64_t* ip = static_cast<const int64_t*>(idx.raw_data());
    T* gxp = static_cast<T*>(gx.raw_data());
    ParallelFor(0, NC, 1, [&](int64_t begin, int64_t end) {  // planes are independent
      for (int64_t p = begin; p < end; ++p) {
        std::vector<double> acc(HW, 0.0);
        for (int64_t o = 0; o < OHW; ++o) {
          int64_t i = ip[p * OHW + o];
          if (i >= 0) acc[i] += static_cast<double>(Convert<Compute<T>>(gyp[p * OHW + o]));
        }
        for (int64_t i = 0; i < HW; ++i) gxp[p * HW + i] = Convert<T>(acc[i]);
      }
    });
  });
}

// out (zeros) [.. index[..i..] ..] += src[..i..] along dim. Serial.
void ScatterAddKernel(const KernelCall& c) {
  const Tensor& src = c.in[0];
  const Tensor& index = c.in[1];
  const Tensor& y = c.out[0];
  int64_t d = c.attrs.dims[0];
  Strides ys = y.strides();
  ys[d] = 0;
  Tensor y_base = y.AsStrided(src.shape(), ys, y.offset());
  const auto* ip = static_cast<const int64_t*>(StorageBase(index));
  VisitPlain(c, src.dtype(), [&]<typename T>(TypeTag<T>) {
    const void* sp = StorageBase(src);
    void* yp = StorageBase(y);
    ForEachStrided<3>(src.shape(), {&y_base, &src, &index}, [&](const std::array<int64_t, 3>& o) {
      int64_t i = CheckedIndex(c, ip[o[2]], y.size(d));
      int64_t at = o[0] + i * y.stride(d);
      StoreAt<T>(yp, at, Convert<T>(Convert<Compute<T>>(LoadAt<T>(yp, at)) + Convert<Compute<T>>(LoadAt<T>(sp, o[1]))));
    }, 1, /*serial=*/true);
  });
}

// ---- quantization (Note [One quantization formula]) -----------------------------

// Note [Fake-quant runs]: when x is contiguous and scale and zero point vary
// along at most one dim (per tensor or per channel), the work is (outer, channel,
// inner) runs with constant parameters: a loop the compiler vectorizes. Fills
// *runs and returns true when that layout holds.
struct ChannelRuns {
  int64_t outer = 1, channels = 1, inner = 1, param_stride = 0;
};
// Calls fn(begin, end, channel) over [0, numel) in parallel chunks split at
// channel boundaries, so that each call has one scale and zero point.
template <typename F>
void ForEachRun(const ChannelRuns& runs, F&& fn) {
  int64_t numel = runs.outer * runs.channels * runs.inner;
  ParallelFor(0, numel, 32768, [&](int64_t b, int64_t e) {
    while (b < e) {
      int64_t run = b / runs.inner, stop = std::min(e, (run + 1) * runs.inner);
      fn(b, stop, run % runs.channels);
      b = stop;
    }
  });
}

bool AsChannelRuns(const Tensor& x, const Tensor& param, std::initializer_list<const Tensor*> dense, ChannelRuns* runs) {
  for (const Tensor* t : dense) {
    if (!t->is_contiguous()) return false;
  }
  int axis = -1;
  for (int d = 0; d < x.dim(); ++d) {
    if (param.stride(d) != 0 && x.size(d) != 1) {
      if (axis >= 0) return false;
      axis = d;
    }
  }
  if (axis >= 0) {
    runs->channels = x.size(axis);
    runs->param_stride = param.stride(axis);
    for (int d = 0; d < axis; ++d) runs->outer *= x.size(d);
    for (int d = axis + 1; d < x.dim(); ++d) runs->inner *= x.size(d);
  } else {
    runs->inner = x.numel();
  }
  return true;
}

// x float, scale and zero point f64 spread over x's shape -> q quantized, in
// x's compute type (Note [One quantization formula]).
void QuantizeKernel(const KernelCall& c) {
  const Tensor &x = c.in[0], &scale = c.in[1], &zp = c.in[2], &q = c.out[0];
  VisitPlain(c, x.dtype(), [&]<typename T>(TypeTag<T>) {
    using C = Compute<T>;
    const C qmin = static_cast<C>(c.attrs.quant_min), qmax = static_cast<C>(c.attrs.quant_max);
    VisitDType(q.dtype(), [&]<typename Q>(TypeTag<Q>) {
      ChannelRuns runs;
      if constexpr (!std::is_same_v<Q, QInt4x2>) {
        // Note [Fake-quant runs] holds here too: integer inference quantizes every
        // activation (BERT: each Linear's input) through this kernel.
        if (scale.strides() == zp.strides() && AsChannelRuns(x, scale, {&x, &q}, &runs)) {
          const T* xp = x.data<T>();
          Elem<Q>* qp = static_cast<Elem<Q>*>(StorageBase(q)) + q.offset();
          const double *sp = static_cast<const double*>(StorageBase(scale)) + scale.offset();
          const double* zpp = static_cast<const double*>(StorageBase(zp)) + zp.offset();
          ForEachRun(runs, [&](int64_t b, int64_t e, int64_t ch) {
            const C s = static_cast<C>(sp[ch * runs.param_stride]), z = static_cast<C>(zpp[ch * runs.param_stride]);
            // Local pointers: an int8 store may alias anything, the captured ones included.
            const T* in = xp;
            Elem<Q>* out = qp;
            const C lo = qmin, hi = qmax;
            for (int64_t i = b; i < e; ++i) out[i] = Convert<Elem<Q>>(QuantizeValue<C>(Convert<C>(in[i]), s, z, lo, hi));
          });
          return;
        }
      }
      const void *xp = StorageBase(x), *sp = StorageBase(scale), *zpp = StorageBase(zp);
      void* qp = StorageBase(q);
      ForEachStrided<4>(q.shape(), {&q, &x, &scale, &zp}, [&](const std::array<int64_t, 4>& o) {
        C v = QuantizeValue<C>(Convert<C>(LoadAt<T>(xp, o[1])), static_cast<C>(LoadAt<double>(sp, o[2])),
                               static_cast<C>(LoadAt<double>(zpp, o[3])), qmin, qmax);
        StoreAt<Q>(qp, o[0], Convert<Elem<Q>>(v));
      }, 32768, std::is_same_v<Q, QInt4x2>);
    });
  });
}

// q quantized, scale and zero point f64 spread over q's shape -> x float.
void DequantizeKernel(const KernelCall& c) {
  const Tensor &q = c.in[0], &scale = c.in[1], &zp = c.in[2], &x = c.out[0];
  VisitDType(q.dtype(), [&]<typename Q>(TypeTag<Q>) {
    VisitPlain(c, x.dtype(), [&]<typename T>(TypeTag<T>) {
      const void *qp = StorageBase(q), *sp = StorageBase(scale), *zpp = StorageBase(zp);
      void* xp = StorageBase(x);
      ForEachStrided<4>(x.shape(), {&x, &q, &scale, &zp}, [&](const std::array<int64_t, 4>& o) {
        using C = Compute<T>;
        C v = DequantizeValue<C>(Convert<C>(LoadAt<Q>(qp, o[1])), static_cast<C>(LoadAt<double>(sp, o[2])),
                                 static_cast<C>(LoadAt<double>(zpp, o[3])));
        StoreAt<T>(xp, o[0], Convert<T>(v));
      });
    });
  });
}

// x, scale, zero point of one floating dtype and shape -> y = dequantize(quantize(x)).
void FakeQuantizeKernel(const KernelCall& c) {
  const Tensor &x = c.in[0], &scale = c.in[1], &zp = c.in[2], &y = c.out[0];
  VisitPlain(c, x.dtype(), [&]<typename T>(TypeTag<T>) {
    using C = Compute<T>;
    const C qmin = static_cast<C>(c.attrs.quant_min), qmax = static_cast<C>(c.attrs.quant_max);
    ChannelRuns runs;
    if (scale.strides() == zp.strides() && AsChannelRuns(x, scale, {&x, &y}, &runs)) {  // Note [Fake-quant runs]
      const T *xp = x.data<T>(), *sp = static_cast<const T*>(StorageBase(scale)) + scale.offset();
      const T* zpp = static_cast<const T*>(StorageBase(zp)) + zp.offset();
      T* yp = y.data<T>();
      ForEachRun(runs, [&](int64_t b, int64_t e, int64_t ch) {
        const C s = Convert<C>(sp[ch * runs.param_stride]), z = Convert<C>(zpp[ch * runs.param_stride]);
        for (int64_t i = b; i < e; ++i) {
          yp[i] = Convert<T>(DequantizeValue<C>(QuantizeValue<C>(Convert<C>(xp[i]), s, z, qmin, qmax), s, z));
        }
      });
      return;
    }
    const void *xp = StorageBase(x), *sp = StorageBase(scale), *zpp = StorageBase(zp);
    void* yp = StorageBase(y);
    ForEachStrided<4>(y.shape(), {&y, &x, &scale, &zp}, [&](const std::array<int64_t, 4>& o) {
      C s = Convert<C>(LoadAt<T>(sp, o[2])), z = Convert<C>(LoadAt<T>(zpp, o[3]));
      StoreAt<T>(yp, o[0], Convert<T>(DequantizeValue<C>(QuantizeValue<C>(Convert<C>(LoadAt<T>(xp, o[1])), s, z, qmin, qmax), s, z)));
    });
  });
}

// grad, x, scale, zero point (one shape and dtype) -> grads of x, scale, zero point.
void FakeQuantizeBackwardKernel(const KernelCall& c) {
  const Tensor &g = c.in[0], &x = c.in[1], &scale = c.in[2], &zp = c.in[3];
  const Tensor &gx = c.out[0], &gs = c.out[1], &gz = c.out[2];
  const OpAttrs& at = c.attrs;
  bool ewgs = at.fake_quant_gradient == static_cast<int>(FakeQuantGradient::kEwgs);
  VisitPlain(c, x.dtype(), [&]<typename T>(TypeTag<T>) {
    const void *gp = StorageBase(g), *xp = StorageBase(x), *sp = StorageBase(scale), *zpp = StorageBase(zp);
    void *gxp = StorageBase(gx), *gsp = StorageBase(gs), *gzp = StorageBase(gz);
    using C = Compute<T>;
    auto load = [](const void* base, int64_t i) { return Convert<C>(LoadAt<T>(base, i)); };
    const C qmin = static_cast<C>(at.quant_min), qmax = static_cast<C>(at.quant_max);
    const C delta = static_cast<C>(at.ewgs_delta), grad_scale = static_cast<C>(at.lsq_grad_scale);
    auto run = [&]<bool kEwgs>() {
      ChannelRuns runs;
      if (scale.strides() == zp.strides() && AsChannelRuns(x, scale, {&x, &g, &gx, &gs, &gz}, &runs)) {
        const T *xp = x.data<T>(), *gp0 = g.data<T>();
        const T* sp0 = static_cast<const T*>(StorageBase(scale)) + scale.offset();
        const T* zp0 = static_cast<const T*>(StorageBase(zp)) + zp.offset();
        T *gx0 = gx.data<T>(), *gs0 = gs.data<T>(), *gz0 = gz.data<T>();
        ForEachRun(runs, [&](int64_t b, int64_t e, int64_t ch) {
          const C s = Convert<C>(sp0[ch * runs.param_stride]), z = Convert<C>(zp0[ch * runs.param_stride]);
          for (int64_t i = b; i < e; ++i) {
            FakeQuantGrads<C> r =
                FakeQuantizeGradients<C, kEwgs>(Convert<C>(gp0[i]), Convert<C>(xp[i]), s, z, qmin, qmax, delta);
            gx0[i] = Convert<T>(r.x);
            gs0[i] = Convert<T>(r.scale * grad_scale);
            gz0[i] = Convert<T>(r.zero_point);
          }
        });
        return;
      }
      ForEachStrided<7>(x.shape(), {&gx, &gs, &gz, &g, &x, &scale, &zp}, [&](const std::array<int64_t, 7>& o) {
        FakeQuantGrads<C> r = FakeQuantizeGradients<C, kEwgs>(load(gp, o[3]), load(xp, o[4]), load(sp, o[5]),
                                                              load(zpp, o[6]), qmin, qmax, delta);
        StoreAt<T>(gxp, o[0], Convert<T>(r.x));
        StoreAt<T>(gsp, o[1], Convert<T>(r.scale * grad_scale));
        StoreAt<T>(gzp, o[2], Convert<T>(r.zero_point));
      });
    };
    if (ewgs) {
      run.template operator()<true>();
    } else {
      run.template operator()<false>();
    }
  });
}

// The epilogue of the integer kernels: the post-ops (residual, ReLU), then exact
// real results into an f32 output, or requantized with the output's per-tensor
// parameters (Note [One quantization formula]). `real` is in y's logical order; y
// may be strided (channels-last).
void StoreIntegerResult(std::vector<double>& real, const KernelCall& c) {
  const Tensor& y = c.out[0];
  if (c.attrs.residual) {
    const Tensor& res = c.in.back();
    if (res.is_quantized()) {
      std::vector<int32_t> r = res.IntRepr();
      double s = res.qparams().scales[0], z = static_cast<double>(res.qparams().zero_points[0]);
      for (size_t i = 0; i < real.size(); ++i) real[i] += DequantizeValue<double>(r[i], s, z);
    } else {
      std::vector<float> r = res.ToVector<float>();
      for (size_t i = 0; i < real.size(); ++i) real[i] += r[i];
    }
  }
  if (c.attrs.relu) {
    for (double& v : real) v = std::max(v, 0.0);
  }
  if (c.attrs.gelu) {
    for (double& v : real) v = GeluFn{}(v);
  }
  std::vector<int64_t> offsets(real.size());
  size_t i = 0;
  ForEachStrided<1>(
      y.shape(), {&y}, [&](const std::array<int64_t, 1>& o) { offsets[i++] = o[0] - y.offset(); }, 1, /*serial=*/true);
  if (y.dtype() == DType::kF32) {
    float* yp = y.data<float>();
    for (size_t k = 0; k < real.size(); ++k) yp[offsets[k]] = static_cast<float>(real[k]);
    return;
  }
  const QuantParams& po = y.qparams();
  auto [qmin, qmax] = QuantRange(y.dtype(), po);
  for (size_t k = 0; k < real.size(); ++k) {
    double q = QuantizeValue<double>(real[k], po.scales[0], static_cast<double>(po.zero_points[0]),
                                     static_cast<double>(qmin), static_cast<double>(qmax));
    if (y.dtype() == DType::kQInt8) {
      y.data<int8_t>()[offsets[k]] = static_cast<int8_t>(q);
    } else {
      y.data<uint8_t>()[offsets[k]] = static_cast<uint8_t>(q);
    }
  }
}

// Bias: the input after the two operands, unless it is the residual.
const Tensor* IntegerBias(const KernelCall& c) {
  return c.in.size() > 2u + (c.attrs.residual ? 1 : 0) ? &c.in[2] : nullptr;
}

// a (M, K), b (K, N) quantized, optional f32 bias (N) -> y (M, N) f32 or quantized.
void QuantizedMatmulKernel(const KernelCall& c) {
  const Tensor &a = c.in[0], &b = c.in[1];
  const Tensor* bias = IntegerBias(c);
  int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  const QuantParams &pa = a.qparams(), &pb = b.qparams();
  std::vector<int32_t> av = a.IntRepr(), bv = b.IntRepr();
  const float* bp = bias ? bias->data<float>() : nullptr;
  std::vector<double> real(M * N);
  ParallelFor(0, M, 1, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      for (int64_t n = 0; n < N; ++n) {
        size_t ch = pb.scheme == QScheme::kPerChannel ? n : 0;
        int64_t acc = 0;
        for (int64_t k = 0; k < K; ++k) {
          acc += (int64_t{av[m * K + k]} - pa.zero_points[0]) * (int64_t{bv[k * N + n]} - pb.zero_points[ch]);
        }
        real[m * N + n] = pa.scales[0] * pb.scales[ch] * static_cast<double>(acc) + (bp ? bp[n] : 0.0);
      }
    }
  });
  StoreIntegerResult(real, c);
}

// x (N, C, H, W), w (O, C/G, KH, KW) quantized, optional f32 bias (O) -> y (N, O,
// OH, OW) f32 or quantized. Padding is x's zero point: it adds nothing.
void QuantizedConv2dKernel(const KernelCall& c) {
  const Tensor &x = c.in[0], &w = c.in[1], &y = c.out[0];
  const Tensor* bias = IntegerBias(c);
  const OpAttrs& at = c.attrs;
  const QuantParams &px = x.qparams(), &pw = w.qparams();
  int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  int64_t O = w.size(0), CG = w.size(1), KH = w.size(2), KW = w.size(3);
  int64_t OH = y.size(2), OW = y.size(3), OG = O / at.groups;
  std::vector<int32_t> xv = x.IntRepr(), wv = w.IntRepr();
  const float* bp = bias ? bias->data<float>() : nullptr;
  std::vector<double> real(y.numel());
  ParallelFor(0, N * O, 1, [&](int64_t begin, int64_t end) {
    for (int64_t no = begin; no < end; ++no) {
      int64_t n = no / O, o = no % O, g = o / OG;
      double scale = px.scales[0] * pw.scales[pw.scheme == QScheme::kPerChannel ? o : 0];
      for (int64_t oh = 0; oh < OH; ++oh) {
        for (int64_t ow = 0; ow < OW; ++ow) {
          int64_t acc = 0;
          for (int64_t cg = 0; cg < CG; ++cg) {
            int64_t ch = g * CG + cg;
            for (int64_t kh = 0; kh < KH; ++kh) {
              int64_t ih = oh * at.stride[0] - at.padding[0] + kh * at.dilation[0];
              if (ih < 0 || ih >= H) continue;
              for (int64_t kw = 0; kw < KW; ++kw) {
                int64_t iw = ow * at.stride[1] - at.padding[1] + kw * at.dilation[1];
                if (iw < 0 || iw >= W) continue;
                acc += (int64_t{xv[((n * C + ch) * H + ih) * W + iw]} - px.zero_points[0]) *
                       int64_t{wv[((o * CG + cg) * KH + kh) * KW + kw]};
              }
            }
          }
          real[((n * O + o) * OH + oh) * OW + ow] = scale * static_cast<double>(acc) + (bp ? bp[o] : 0.0);
        }
      }
    }
  });
  StoreIntegerResult(real, c);
}

struct Table {
  std::array<Kernel, kNumOps> kernels{};
  Table() {
#define QUANTA_REF_UNARY(Name, str) kernels[static_cast<int>(Op::k##Name)] = &UnaryKernel<Name##Fn>;
    QUANTA_UNARY_OPS(QUANTA_REF_UNARY)
#undef QUANTA_REF_UNARY
#define QUANTA_REF_BINARY(Name, str) kernels[static_cast<int>(Op::k##Name)] = &BinaryKernel<Name##Fn>;
    QUANTA_BINARY_OPS(QUANTA_REF_BINARY)
    QUANTA_COMPARE_OPS(QUANTA_REF_BINARY)
#undef QUANTA_REF_BINARY
    Set(Op::kSum, &ReduceKernel<SumReducer>);
    Set(Op::kMax, &ReduceKernel<ExtremeReducer<true>>);
    Set(Op::kMin, &ReduceKernel<ExtremeReducer<false>>);
    Set(Op::kArgmax, &ReduceKernel<ArgmaxReducer>);
    Set(Op::kCopy, &CopyKernel);
    Set(Op::kFill, &FillKernel);
    Set(Op::kArange, &ArangeKernel);
    Set(Op::kWhere, &WhereKernel);
    Set(Op::kMatmul, &MatmulKernel);
    Set(Op::kConv2d, &Conv2dKernel);
    Set(Op::kConv2dBackwardInput, &Conv2dBackwardInputKernel);
    Set(Op::kConv2dBackwardWeight, &Conv2dBackwardWeightKernel);
    Set(Op::kMaxPool2d, &MaxPool2dKernel);
    Set(Op::kMaxPool2dBackward, &MaxPool2dBackwardKernel);
    Set(Op::kGather, &GatherKernel);
    Set(Op::kScatterAdd, &ScatterAddKernel);
    Set(Op::kQuantize, &QuantizeKernel);
    Set(Op::kDequantize, &DequantizeKernel);
    Set(Op::kFakeQuantize, &FakeQuantizeKernel);
    Set(Op::kFakeQuantizeBackward, &FakeQuantizeBackwardKernel);
    Set(Op::kQuantizedMatmul, &QuantizedMatmulKernel);
    Set(Op::kQuantizedConv2d, &QuantizedConv2dKernel);
    Set(Op::kUniform, &UniformKernel);
    Set(Op::kNormal, &NormalKernel);
    Set(Op::kBernoulli, &BernoulliKernel);
    for (int i = 0; i < kNumOps; ++i) {
      QUANTA_CHECK(kernels[i] != nullptr || IsStructural(static_cast<Op>(i)),
                   "reference kernels: op ", OpName(static_cast<Op>(i)), " has none");
    }
  }
  void Set(Op op, Kernel k) { kernels[static_cast<int>(op)] = k; }
};
// Adding an op to core/ops.def: give it a reference kernel above, then bump this.
static_assert(kNumOps == 56, "a new op needs its reference kernel in this table");

}  // namespace

Kernel ReferenceKernel(Op op) {
  static const Table* table = new Table();
  return table->kernels[static_cast<int>(op)];
}

}  // namespace quanta::cpu
