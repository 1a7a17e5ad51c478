// Reference kernels: batch normalization in training, forward and backward.
//
// Note [Fused batch norm]: written with core ops, training-mode batch norm is a
// mean, a variance (mean, subtract, square, mean), a subtract, an rsqrt and two
// broadcast multiplies and an add, and its backward runs the adjoint of each:
// well over a dozen passes over the activation per layer, which were most of
// ResNet-20's training step (perf, docs/benchmarks.md). Here each channel's planes
// (n, c) are dense runs of H * W: the forward reads them once for the mean and
// the biased variance (both moments about a pivot, in f64: as accurate as the
// composition's two passes in f32) and once to write y; the backward reads grad_y and x once for both sums and once more to
// write grad_x. Sums go to 8 f64 partial sums (as Note [Dense reductions]) so
// the loops vectorize; channels run in parallel.
#include <cmath>
#include <type_traits>
#include <array>
#include <algorithm>
#include <vector>

#include "backends/cpu/reference_common.h"

namespace quanta::cpu {
namespace {

// Sums each f(i) over the flat indices i of channel c of an (N, C, HW) tensor,
// all in one pass (the backward's two sums read grad_y and x once).
template <typename... F>
std::array<double, sizeof...(F)> SumChannel(int64_t N, int64_t C, int64_t HW, int64_t c, F&&... f) {
  double part[sizeof...(F)][8] = {};
  for (int64_t n = 0; n < N; ++n) {
    const int64_t base = (n * C + c) * HW;
    int64_t j = 0;
    for (; j + 8 <= HW; j += 8) {
      for (int l = 0; l < 8; ++l) {
        size_t k = 0;
        ((part[k++][l] += f(base + j + l)), ...);
      }
    }
    for (; j < HW; ++j) {
      size_t k = 0;
      ((part[k++][0] += f(base + j)), ...);
    }
  }
  std::array<double, sizeof...(F)> total;
  for (size_t k = 0; k < total.size(); ++k) {
    const double* p = part[k];
    total[k] = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
  }
  return total;
}

// Visits the floating dtypes, with S the statistics' type (f64 for f64, else f32).
template <typename F>
void VisitFloatingWithStats(const KernelCall& c, DType dtype, F&& f) {
  VisitPlain(c, dtype, [&]<typename T>(TypeTag<T>) {
    if constexpr (std::is_floating_point_v<Compute<T>>) {
      using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
      f(TypeTag<T>{}, TypeTag<S>{});
    } else {
      QUANTA_CHECK(false, OpName(c.op), ": needs a floating input, got ", Name(dtype));
    }
  });
}

// Channels-last (rows of C values, R = N * H * W rows): per-channel sums of
// each f over fixed chunks of rows (the same chunks at any thread count),
// combined in chunk order; f(row, channel).
template <typename... F>
std::vector<std::array<double, sizeof...(F)>> SumRows(int64_t R, int64_t C, F&&... f) {
  constexpr int64_t kChunk = 256;
  const int64_t chunks = (R + kChunk - 1) / kChunk;
  std::vector<double> part(static_cast<size_t>(chunks * C * sizeof...(F)), 0.0);
  ParallelFor(0, chunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      double* acc = part.data() + k * C * sizeof...(F);
      for (int64_t r = k * kChunk; r < std::min(R, (k + 1) * kChunk); ++r) {
        size_t which = 0;
        ((([&] {
           double* a = acc + which * C;
           for (int64_t c = 0; c < C; ++c) a[c] += f(r, c);
         })(), ++which), ...);
      }
    }
  });
  std::vector<std::array<double, sizeof...(F)>> total(C);
  for (int64_t k = 0; k < chunks; ++k) {
    for (size_t which = 0; which < sizeof...(F); ++which) {
      const double* a = part.data() + (k * sizeof...(F) + which) * C;
      for (int64_t c = 0; c < C; ++c) total[c][which] += a[c];
    }
  }
  return total;
}

bool ChannelsLast(const Tensor& x) { return x.is_channels_last() && !x.is_contiguous(); }

// One channel's batch-norm forward from its moments about a pivot (the
// channel's first value): with d = x - pivot, mean = pivot + E[d] and
// var = E[d^2] - E[d]^2, in f64. The pivot lies inside the data, so E[d]^2 is at
// most of the order of E[d^2] and the subtraction loses no more than the f64
// sums' last bits (far below f32's), where E[x^2] - E[x]^2 would cancel badly
// for a channel whose mean is large against its spread. y = (x - m) * scale + shift.
template <typename K>
struct BnForward {
  double mean, var;
  K m, scale, shift;
};
template <typename K>
BnForward<K> BnForwardOf(double pivot, double sum_d, double sum_d2, double count, K weight, K bias, double eps) {
  const double mean_d = sum_d / count, mean = pivot + mean_d;
  const double var = std::max(0.0, sum_d2 / count - mean_d * mean_d);
  return {mean, var, static_cast<K>(mean), static_cast<K>(static_cast<double>(weight) / std::sqrt(var + eps)), bias};
}

// One channel's batch-norm backward from Σ gy and Σ gy (x - mean):
// grad_bias = Σ gy, grad_weight = Σ gy x̂, and grad_x = k1 gy + k2 (x - m) + k3.
template <typename K>
struct BnBackward {
  K grad_bias, grad_weight, k1, k2, k3, m;
};
template <typename K>
BnBackward<K> BnBackwardOf(double sum_gy, double sum_gy_xmu, double mean, double var, double count, K weight,
                           double eps) {
  const double invstd = 1 / std::sqrt(var + eps);
  const double gw = sum_gy_xmu * invstd, wi = static_cast<double>(weight) * invstd;
  return {static_cast<K>(sum_gy),           static_cast<K>(gw), static_cast<K>(wi), static_cast<K>(-wi * invstd * gw / count),
          static_cast<K>(-wi * sum_gy / count), static_cast<K>(mean)};
}

// in: x (N, C, H, W), weight (C), bias (C), all contiguous; attrs.scalar: eps.
// out: y (like x), mean (C), biased variance (C).
void BatchNormKernel(const KernelCall& c) {
  const Tensor &x = c.in[0], &w = c.in[1], &b = c.in[2];
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const double eps = c.attrs.scalar, count = static_cast<double>(N * HW);
  VisitFloatingWithStats(c, x.dtype(), [&]<typename T, typename S>(TypeTag<T>, TypeTag<S>) {
    using K = Compute<T>;
    const T* xp = static_cast<const T*>(x.raw_data());
    const T *wp = static_cast<const T*>(w.raw_data()), *bp = static_cast<const T*>(b.raw_data());
    T* yp = static_cast<T*>(c.out[0].raw_data());
    S *mp = static_cast<S*>(c.out[1].raw_data()), *vp = static_cast<S*>(c.out[2].raw_data());
    if (ChannelsLast(x)) {  // x and y (N, H, W, C) in memory
      const int64_t R = N * HW;
      std::vector<double> pivot(C);
      for (int64_t ch = 0; ch < C; ++ch) pivot[ch] = static_cast<double>(Convert<K>(xp[ch]));
      auto sums = SumRows(
          R, C, [&](int64_t r, int64_t ch) { return static_cast<double>(Convert<K>(xp[r * C + ch])) - pivot[ch]; },
          [&](int64_t r, int64_t ch) {
            double d = static_cast<double>(Convert<K>(xp[r * C + ch])) - pivot[ch];
            return d * d;
          });
      std::vector<K> m(C), scale(C), shift(C);
      for (int64_t ch = 0; ch < C; ++ch) {
        const BnForward<K> f = BnForwardOf(pivot[ch], sums[ch][0], sums[ch][1], count, Convert<K>(wp[ch]),
                                           Convert<K>(bp[ch]), eps);
        mp[ch] = static_cast<S>(f.mean);
        vp[ch] = static_cast<S>(f.var);
        m[ch] = f.m, scale[ch] = f.scale, shift[ch] = f.shift;
      }
      ParallelFor(0, R, 64, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const T* xr = xp + r * C;
          T* yr = yp + r * C;
          for (int64_t ch = 0; ch < C; ++ch) yr[ch] = Convert<T>((Convert<K>(xr[ch]) - m[ch]) * scale[ch] + shift[ch]);
        }
      });
      return;
    }
    ParallelFor(0, C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t ch = begin; ch < end; ++ch) {
        // One pass for both moments, about a pivot (BnForwardOf).
        const double pivot = static_cast<double>(Convert<K>(xp[ch * HW]));
        const auto [s1, s2] = SumChannel(
            N, C, HW, ch, [&](int64_t i) { return static_cast<double>(Convert<K>(xp[i])) - pivot; },
            [&](int64_t i) {
              double d = static_cast<double>(Convert<K>(xp[i])) - pivot;
              return d * d;
            });
        const BnForward<K> f = BnForwardOf(pivot, s1, s2, count, Convert<K>(wp[ch]), Convert<K>(bp[ch]), eps);
        mp[ch] = static_cast<S>(f.mean);
        vp[ch] = static_cast<S>(f.var);
        const K m = f.m, scale = f.scale, shift = f.shift;
        for (int64_t n = 0; n < N; ++n) {
          const T* xr = xp + (n * C + ch) * HW;
          T* yr = yp + (n * C + ch) * HW;
          for (int64_t j = 0; j < HW; ++j) yr[j] = Convert<T>((Convert<K>(xr[j]) - m) * scale + shift);
        }
      }
    });
  });
}

// in: grad_y, x (N, C, H, W), weight, mean, var (C), all contiguous; attrs.scalar: eps.
// out: grad_x (like x), grad_weight, grad_bias (C). With x̂ = (x - mean) * invstd:
// grad_bias = Σ gy, grad_weight = Σ gy x̂, and
// grad_x = weight * invstd * (gy - grad_bias / n - x̂ * grad_weight / n).
void BatchNormBackwardKernel(const KernelCall& c) {
  const Tensor &gy = c.in[0], &x = c.in[1], &w = c.in[2], &mean = c.in[3], &var = c.in[4];
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const double eps = c.attrs.scalar, count = static_cast<double>(N * HW);
  VisitFloatingWithStats(c, x.dtype(), [&]<typename T, typename S>(TypeTag<T>, TypeTag<S>) {
    using K = Compute<T>;
    const T *gp = static_cast<const T*>(gy.raw_data()), *xp = static_cast<const T*>(x.raw_data());
    const T* wp = static_cast<const T*>(w.raw_data());
    const S *mp = static_cast<const S*>(mean.raw_data()), *vp = static_cast<const S*>(var.raw_data());
    T* gxp = static_cast<T*>(c.out[0].raw_data());
    T *gwp = static_cast<T*>(c.out[1].raw_data()), *gbp = static_cast<T*>(c.out[2].raw_data());
    if (ChannelsLast(x)) {  // grad_y, x and grad_x (N, H, W, C) in memory
      const int64_t R = N * HW;
      auto sums = SumRows(
          R, C, [&](int64_t r, int64_t ch) { return static_cast<double>(Convert<K>(gp[r * C + ch])); },
          [&](int64_t r, int64_t ch) {
            return static_cast<double>(Convert<K>(gp[r * C + ch])) *
                   (static_cast<double>(Convert<K>(xp[r * C + ch])) - static_cast<double>(mp[ch]));
          });
      std::vector<K> k1(C), k2(C), k3(C), m(C);
      for (int64_t ch = 0; ch < C; ++ch) {
        const BnBackward<K> b = BnBackwardOf(sums[ch][0], sums[ch][1], static_cast<double>(mp[ch]),
                                             static_cast<double>(vp[ch]), count, Convert<K>(wp[ch]), eps);
        gbp[ch] = Convert<T>(b.grad_bias);
        gwp[ch] = Convert<T>(b.grad_weight);
        k1[ch] = b.k1, k2[ch] = b.k2, k3[ch] = b.k3, m[ch] = b.m;
      }
      ParallelFor(0, R, 64, [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          for (int64_t ch = 0; ch < C; ++ch) {
            const int64_t i = r * C + ch;
            gxp[i] = Convert<T>(k1[ch] * Convert<K>(gp[i]) + k2[ch] * (Convert<K>(xp[i]) - m[ch]) + k3[ch]);
          }
        }
      });
      return;
    }
    ParallelFor(0, C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t ch = begin; ch < end; ++ch) {
        const double mu = static_cast<double>(mp[ch]);
        const auto [sum_gy, sum_gy_xmu] = SumChannel(
            N, C, HW, ch, [&](int64_t i) { return static_cast<double>(Convert<K>(gp[i])); },
            [&](int64_t i) {
              return static_cast<double>(Convert<K>(gp[i])) * (static_cast<double>(Convert<K>(xp[i])) - mu);
            });
        const BnBackward<K> b =
            BnBackwardOf(sum_gy, sum_gy_xmu, mu, static_cast<double>(vp[ch]), count, Convert<K>(wp[ch]), eps);
        gbp[ch] = Convert<T>(b.grad_bias);
        gwp[ch] = Convert<T>(b.grad_weight);
        const K k1 = b.k1, k2 = b.k2, k3 = b.k3, m = b.m;
        for (int64_t n = 0; n < N; ++n) {
          const int64_t base = (n * C + ch) * HW;
          for (int64_t j = 0; j < HW; ++j) {
            gxp[base + j] = Convert<T>(k1 * Convert<K>(gp[base + j]) + k2 * (Convert<K>(xp[base + j]) - m) + k3);
          }
        }
      }
    });
  });
}

}  // namespace

void AddNormalizationKernels(KernelTable& t) {
  t[static_cast<int>(Op::kBatchNorm)] = &BatchNormKernel;
  t[static_cast<int>(Op::kBatchNormBackward)] = &BatchNormBackwardKernel;
}

}  // namespace quanta::cpu
