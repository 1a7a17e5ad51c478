// Reference kernels: sum, max, min and argmax over dims.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/reference_common.h"

namespace quanta::cpu {
namespace {

std::atomic<size_t> general_loops{0};  // ReductionGeneralLoops()

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
  template <typename T> auto Result() const {
    if constexpr (std::is_floating_point_v<Compute<T>>) return fsum; else return isum;
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
  template <typename T> double Result() const { return best; }
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
  template <typename T> int64_t Result() const { return best_index; }
};

// Stores one result, of type R (double or int64_t), as y's dtype. Chosen once
// per call, so that the loops are instantiated per input dtype only, not per
// input and output pair (121 of them per reducer took this file two minutes to
// compile; tools/compile_times.py).
template <typename R>
using StoreFn = void (*)(void*, int64_t, R);
template <typename R>
StoreFn<R> StoreFor(const KernelCall& c, DType dtype) {
  StoreFn<R> fn = nullptr;
  VisitPlain(c, dtype, [&]<typename Out>(TypeTag<Out>) {
    fn = [](void* base, int64_t i, R v) { StoreAt<Out>(base, i, Convert<Out>(v)); };
  });
  return fn;
}

template <typename Reducer>
void ReduceKernel(const KernelCall& c) {
  const Tensor& x = c.in[0];
  const Tensor& y = c.out[0];
  if (x.numel() == 0) {  // an empty reduction (the frontend allows it for sum only)
    VisitPlain(c, x.dtype(), [&]<typename T>(TypeTag<T>) {
      Reducer empty;
      auto value = empty.template Result<T>();
      StoreFn<decltype(value)> store = StoreFor<decltype(value)>(c, y.dtype());
      void* yp = StorageBase(y);
      ForEachStrided<1>(y.shape(), {&y}, [&](const std::array<int64_t, 1>& o) { store(yp, o[0], value); });
    });
    return;
  }
  ReductionViews v = SplitForReduction(x, c.attrs.dims);
  // Note [Dense reductions]: a reduction over one dense run (softmax's and layer
  // norm's last dim) of f32/f64 runs as a plain loop: sums in 8 f64 partial
  // sums (a different order from the serial loop, no less accurate), max and min
  // with NaN tracked beside the comparison. The result is the serial loop's but
  // for the last bits of a sum.
  constexpr bool kSum = std::is_same_v<Reducer, SumReducer>;
  constexpr bool kExtreme = std::is_same_v<Reducer, ExtremeReducer<true>> || std::is_same_v<Reducer, ExtremeReducer<false>>;
  // Sums and extremes do not depend on the order they visit values in, so the
  // reduced dims are taken in memory order: a whole channels-last activation (an
  // observer's min and max) is one dense run too. Argmax counts in index order.
  const LoopGeometry<1> inner_geometry(v.inner.shape(), {&v.inner}, /*memory_order=*/kSum || kExtreme);
  const bool dense = inner_geometry.sizes.size() == 1 && inner_geometry.strides[0][0] == 1;
  if (dense && (kSum || kExtreme) && (x.dtype() == DType::kF32 || x.dtype() == DType::kF64)) {
    const int64_t n = v.inner.numel();
    StoreFn<double> store = StoreFor<double>(c, y.dtype());
    VisitDType(x.dtype(), [&]<typename T>(TypeTag<T>) {
      if constexpr (std::is_floating_point_v<T>) {
        const T* xb = static_cast<const T*>(StorageBase(x));
        void* yp = StorageBase(y);
        constexpr bool kMax = std::is_same_v<Reducer, ExtremeReducer<true>>;
        // Note [Dense sums] and Note [Extremes in lanes] (reference_common.h).
        auto extreme = [](const T* p, int64_t count, bool* nan) { return DenseExtreme<kMax, T>(p, count, nan); };
        auto sum = [](const T* p, int64_t count) {
          return DenseSum(count, [p](int64_t j) { return static_cast<double>(p[j]); });
        };
        // Note [Split whole-tensor reductions]: an observer's min and max of a
        // whole activation, and LSQ's step-size gradient (a sum over it), are one
        // output each, which the grain below would leave to one thread. A long run
        // is cut into chunks of fixed length whatever the thread count, each
        // reduced as above, and the chunks' results combined in order: the same
        // result at any thread count (a sum's last bits differ from the one-run
        // loop's; max and min are exact either way).
        if (y.numel() == 1 && n >= 4 * 32768) {
          const int64_t chunk = 32768;
          const int64_t chunks = (n + chunk - 1) / chunk;
          const T* p = xb + v.outer.offset();
          std::vector<double> part(chunks);
          std::vector<char> nan(chunks);
          ParallelFor(0, chunks, 1, [&](int64_t b, int64_t e) {
            for (int64_t k = b; k < e; ++k) {
              const int64_t count = std::min(chunk, n - k * chunk);
              if constexpr (kSum) {
                part[k] = sum(p + k * chunk, count);
              } else {
                bool f;
                part[k] = static_cast<double>(extreme(p + k * chunk, count, &f));
                nan[k] = f;
              }
            }
          });
          double r = part[0];
          bool any_nan = nan[0] != 0;
          for (int64_t k = 1; k < chunks; ++k) {
            if constexpr (kSum) {
              r += part[k];
            } else {
              r = kMax ? std::max(r, part[k]) : std::min(r, part[k]);
              any_nan |= nan[k] != 0;
            }
          }
          store(yp, y.offset(), any_nan ? std::numeric_limits<double>::quiet_NaN() : r);
          return;
        }
        ForEachStrided<2>(y.shape(), {&y, &v.outer}, [&](const std::array<int64_t, 2>& o) {
          const T* p = xb + o[1];
          double r;
          if constexpr (kSum) {
            r = sum(p, n);
          } else {
            bool nan;
            T best = extreme(p, n, &nan);
            r = nan ? std::numeric_limits<double>::quiet_NaN() : static_cast<double>(best);
          }
          store(yp, o[0], r);
        }, /*grain=*/std::max<int64_t>(1, 32768 / std::max<int64_t>(1, n)));
      }
    });
    return;
  }
  // Note [Column reductions]: a sum or extreme over a strided dim whose outputs
  // lie side by side in x's memory (a channels-last activation's mean over
  // H*W: the integer models' global average pool; a bias gradient's sum over
  // the batch) walks the rows once, adding each row's run of columns into
  // per-column results, a loop over columns that vectorizes. Each column sees
  // its values in the serial loop's order, with the same f64 sum, so the
  // result is the serial loop's to the bit (extremes keep the first of equal
  // values, as the serial loop does). The general loop below took 1.3% of ResNet-50's batch-1
  // int8 forward for the pool alone (perf, bench_infer).
  if ((kSum || kExtreme) && (x.dtype() == DType::kF32 || x.dtype() == DType::kF64) &&
      inner_geometry.sizes.size() == 1) {
    const LoopGeometry<2> outer_geometry(y.shape(), {&y, &v.outer});
    if (outer_geometry.strides.back()[1] == 1 && outer_geometry.sizes.back() >= 4) {
      const int64_t rows = inner_geometry.sizes[0], row_stride = inner_geometry.strides[0][0];
      StoreFn<double> store = StoreFor<double>(c, y.dtype());
      VisitDType(x.dtype(), [&]<typename T>(TypeTag<T>) {
        if constexpr (std::is_floating_point_v<T>) {
          constexpr bool kMax = std::is_same_v<Reducer, ExtremeReducer<true>>;
          using Acc = std::conditional_t<kSum, double, T>;
          using Mask = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
          const T* xb = static_cast<const T*>(StorageBase(x));
          void* yp = StorageBase(y);
          ForEachRunStrided<2>(y.shape(), {&y, &v.outer}, [&](const std::array<int64_t, 2>& off, int64_t n,
                                                               const std::array<int64_t, 2>& stride) {
            constexpr int64_t kBlock = 256;
            Acc acc[kBlock];
            Mask bad[kBlock];
            for (int64_t c0 = 0; c0 < n; c0 += kBlock) {
              const int64_t m = std::min(kBlock, n - c0);
              const T* p = xb + off[1] + c0;
              for (int64_t j = 0; j < m; ++j) {
                acc[j] = kSum ? Acc(0) + static_cast<Acc>(p[j]) : static_cast<Acc>(p[j]);  // 0 + -0 = +0, as serially
                if constexpr (!kSum) bad[j] = p[j] != p[j];
              }
              for (int64_t r = 1; r < rows; ++r) {
                const T* q = p + r * row_stride;
                if constexpr (kSum) {
                  for (int64_t j = 0; j < m; ++j) acc[j] += static_cast<double>(q[j]);
                } else {
                  for (int64_t j = 0; j < m; ++j) {
                    const T val = q[j];
                    bad[j] |= val != val;
                    acc[j] = kMax ? (val > acc[j] ? val : acc[j]) : (val < acc[j] ? val : acc[j]);
                  }
                }
              }
              for (int64_t j = 0; j < m; ++j) {
                const bool nan = !kSum && bad[j] != 0;
                store(yp, off[0] + (c0 + j) * stride[0],
                      nan ? std::numeric_limits<double>::quiet_NaN() : static_cast<double>(acc[j]));
              }
            }
          }, /*grain=*/std::max<int64_t>(1, 32768 / rows));
        }
      });
      return;
    }
  }
  general_loops.fetch_add(1, std::memory_order_relaxed);
  VisitPlain(c, x.dtype(), [&]<typename T>(TypeTag<T>) {
    using R = decltype(Reducer{}.template Result<T>());
    StoreFn<R> store = StoreFor<R>(c, y.dtype());
    const void* xp = StorageBase(x);
    void* yp = StorageBase(y);
    ForEachStrided<2>(y.shape(), {&y, &v.outer}, [&](const std::array<int64_t, 2>& o) {
      Reducer r;
      r.template Start<T>();
      int64_t i = 0;
      // Inner indices are relative to the outer element's storage index.
      ForEachStrided<1>(v.inner.shape(), {&v.inner}, [&](const std::array<int64_t, 1>& in) {
        r.Add(Convert<Compute<T>>(LoadAt<T>(xp, o[1] + in[0])), i++);
      }, 1, /*serial=*/true);
      store(yp, o[0], r.template Result<T>());
    }, /*grain=*/std::max<int64_t>(1, 32768 / std::max<int64_t>(1, v.inner.numel())));
  });
}

}  // namespace

size_t ReductionGeneralLoops() { return general_loops.load(std::memory_order_relaxed); }

void AddReductionKernels(KernelTable& t) {
  t[static_cast<int>(Op::kSum)] = &ReduceKernel<SumReducer>;
  t[static_cast<int>(Op::kMax)] = &ReduceKernel<ExtremeReducer<true>>;
  t[static_cast<int>(Op::kMin)] = &ReduceKernel<ExtremeReducer<false>>;
  t[static_cast<int>(Op::kArgmax)] = &ReduceKernel<ArgmaxReducer>;
}

}  // namespace quanta::cpu
