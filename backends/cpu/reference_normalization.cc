// Reference kernels: batch normalization in training, forward and backward;
// layer normalization and softmax (Note [Fused layer norm]).
//
// Note [Fused batch norm]: written with core ops, training-mode batch norm is a
// mean, a variance (mean, subtract, square, mean), a subtract, an rsqrt and two
// broadcast multiplies and an add, and its backward runs the adjoint of each:
// well over a dozen passes over the activation per layer, which were most of
// ResNet-20's training step (perf, docs/benchmarks.md). Here each channel's planes
// (n, c) are dense runs of H * W: the forward reads them once for the mean and
// the biased variance (both moments about a pivot, in f64: as accurate as the
// composition's two passes in f32) and once to write y; the backward reads grad_y and x once for both sums and once more to
// write grad_x. Sums go to 8 f64 partial sums (as Note [Dense sums]) so
// the loops vectorize; channels run in parallel.
#include <cmath>
#include <limits>
#include <type_traits>
#include <array>
#include <algorithm>
#include <bit>
#include <cstdint>
#include <vector>

#include "backends/cpu/reference_common.h"
#include "backends/cpu/vector_math.h"
#include "core/scalar_ops.h"

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
// kF terms over fixed chunks of rows (the same chunks at any thread count),
// combined in chunk order; f(r, ch) returns the kF terms (std::array<double,
// kF>) of row r, channel ch.
//
// Note [Channel sums in registers]: a chunk's sums run over blocks of 16
// channels, each block's kF x 16 running sums in a local array that GCC keeps
// in vector registers for the whole chunk. Accumulating a whole row into an
// array of C sums in memory instead (as this did before) makes every row's
// adds wait for the previous row's stores to the same sums: at 16 channels,
// ResNet-20's first stage, that chain bounded the statistics pass at a third
// of the memory's rate (apps:bench_core's BM_BatchNormChannelsLast). Each
// channel's sum still adds its rows in row order from 0, so the result is the
// same to the bit. GCC unrolls a block's 16 channels and vectorizes them as
// straight-line code, which keeps no branch: hence ReLU's mask below by bits
// (KeepIf), not by a conditional. Channels past the last whole block of 16 go
// one at a time.
template <size_t kF, typename F>
std::vector<std::array<double, kF>> SumRows(int64_t R, int64_t C, F&& f) {
  constexpr int64_t kChunk = 256, kLanes = 16;
  const int64_t chunks = (R + kChunk - 1) / kChunk;
  std::vector<double> part(static_cast<size_t>(chunks * C * kF), 0.0);
  ParallelFor(0, chunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      double* acc = part.data() + k * C * kF;
      const int64_t r0 = k * kChunk, r1 = std::min(R, r0 + kChunk);
      int64_t c0 = 0;
      for (; c0 + kLanes <= C; c0 += kLanes) {
        double a[kF][kLanes] = {};
        for (int64_t r = r0; r < r1; ++r) {
          for (int64_t l = 0; l < kLanes; ++l) {
            const std::array<double, kF> t = f(r, c0 + l);
            for (size_t which = 0; which < kF; ++which) a[which][l] += t[which];
          }
        }
        for (size_t which = 0; which < kF; ++which) {
          for (int64_t l = 0; l < kLanes; ++l) acc[which * C + c0 + l] = a[which][l];
        }
      }
      for (int64_t r = r0; r < r1 && c0 < C; ++r) {
        for (int64_t c = c0; c < C; ++c) {
          const std::array<double, kF> t = f(r, c);
          for (size_t which = 0; which < kF; ++which) acc[which * C + c] += t[which];
        }
      }
    }
  });
  std::vector<std::array<double, kF>> total(C);
  for (int64_t k = 0; k < chunks; ++k) {
    for (size_t which = 0; which < kF; ++which) {
      const double* a = part.data() + (k * kF + which) * C;
      for (int64_t c = 0; c < C; ++c) total[c][which] += a[c];
    }
  }
  return total;
}

bool ChannelsLast(const Tensor& x) { return x.is_channels_last() && !x.is_contiguous(); }

// One channel's batch statistics from its moments about a pivot (the channel's
// first value): with d = x - pivot, mean = pivot + E[d] and var = E[d^2] -
// E[d]^2, in f64. The pivot lies inside the data, so E[d]^2 is at most of the
// order of E[d^2] and the subtraction loses no more than the f64 sums' last
// bits (far below f32's), where E[x^2] - E[x]^2 would cancel badly for a
// channel whose mean is large against its spread.
struct BnStats {
  double mean, var;
};
inline BnStats BnStatsOf(double pivot, double sum_d, double sum_d2, double count) {
  const double mean_d = sum_d / count;
  return {pivot + mean_d, std::max(0.0, sum_d2 / count - mean_d * mean_d)};
}

// y = (x - m) * scale + shift, from the statistics as stored (S: f32, or f64
// for f64), so that the backward recomputes the forward's normalized values
// bit for bit from mean, var, weight and bias (Note [Batch norm epilogue]).
// Channels-last loops keep each field of BnAffine (core/scalar_ops.h) in its
// own vector (so they vectorize).
template <typename K>
struct BnAffines {
  std::vector<K> m, scale, shift;
  explicit BnAffines(int64_t C) : m(C), scale(C), shift(C) {}
  void Set(int64_t ch, const BnAffine<K>& f) { m[ch] = f.m, scale[ch] = f.scale, shift[ch] = f.shift; }
};

// Note [Batch norm epilogue]: y = relu(bn(x) + residual), the tail of a ResNet
// block, and y = relu(bn(x)), its middle, in the normalizing pass instead of
// two or three more passes (an add, a ReLU, and ReLU's threshold in the
// backward). The value is rounded as the composition rounds it: bn(x) to T,
// then the sum in the compute type and to T, then ReLU. The backward needs
// ReLU's mask, which it recomputes from x, the stored statistics, weight, bias
// and the residual (BnAffineOf gives the forward's exact m, scale, shift), so
// nothing extra is saved for it; it masks grad_y as ThresholdBackward does and
// writes the residual's gradient (the masked grad_y) in the same pass. The
// value functions (BnAffineOf, BnNormalize, BnEpilogue, BnMaskedGrad) live in
// core/scalar_ops.h, shared with the CUDA kernels.

// Calls f.template operator()<kResidual, kRelu>() for the call's flags.
template <typename F>
void WithEpilogue(const OpAttrs& a, F&& f) {
  if (a.residual) {
    a.relu ? f.template operator()<true, true>() : f.template operator()<true, false>();
  } else {
    a.relu ? f.template operator()<false, true>() : f.template operator()<false, false>();
  }
}

// in: x (N, C, H, W), weight (C), bias (C), [residual (like x)], all contiguous
// or all channels-last; attrs.scalar: eps; attrs.residual, attrs.relu: the
// epilogue. out: y (like x), mean (C), biased variance (C).
void BatchNormKernel(const KernelCall& c) {
  const Tensor &x = c.in[0], &w = c.in[1], &b = c.in[2];
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const double eps = c.attrs.scalar, count = static_cast<double>(N * HW);
  VisitFloatingWithStats(c, x.dtype(), [&]<typename T, typename S>(TypeTag<T>, TypeTag<S>) {
    using K = Compute<T>;
    const T* xp = static_cast<const T*>(x.raw_data());
    const T *wp = static_cast<const T*>(w.raw_data()), *bp = static_cast<const T*>(b.raw_data());
    const T* rp = c.attrs.residual ? static_cast<const T*>(c.in[3].raw_data()) : nullptr;
    T* yp = static_cast<T*>(c.out[0].raw_data());
    S *mp = static_cast<S*>(c.out[1].raw_data()), *vp = static_cast<S*>(c.out[2].raw_data());
    // Stores channel ch's statistics and returns its affine map.
    auto finish = [&](int64_t ch, double pivot, double sum_d, double sum_d2) {
      const BnStats st = BnStatsOf(pivot, sum_d, sum_d2, count);
      mp[ch] = static_cast<S>(st.mean);
      vp[ch] = static_cast<S>(st.var);
      return BnAffineOf<K, S>(mp[ch], vp[ch], Convert<K>(wp[ch]), Convert<K>(bp[ch]), eps);
    };
    if (ChannelsLast(x)) {  // x, y and the residual (N, H, W, C) in memory
      const int64_t R = N * HW;
      std::vector<double> pivot(C);
      for (int64_t ch = 0; ch < C; ++ch) pivot[ch] = static_cast<double>(Convert<K>(xp[ch]));
      const double* __restrict pv = pivot.data();
      auto sums = SumRows<2>(R, C, [&](int64_t r, int64_t ch) {
        const double d = static_cast<double>(Convert<K>(xp[r * C + ch])) - pv[ch];
        return std::array<double, 2>{d, d * d};
      });
      BnAffines<K> f(C);
      for (int64_t ch = 0; ch < C; ++ch) f.Set(ch, finish(ch, pivot[ch], sums[ch][0], sums[ch][1]));
      const K *m = f.m.data(), *scale = f.scale.data(), *shift = f.shift.data();
      WithEpilogue(c.attrs, [&]<bool kResidual, bool kRelu>() {
        ParallelFor(0, R, 64, [&](int64_t begin, int64_t end) {
          for (int64_t r = begin; r < end; ++r) {
            for (int64_t ch = 0; ch < C; ++ch) {
              const int64_t i = r * C + ch;
              yp[i] = BnEpilogue<T, kResidual, kRelu>(BnNormalize(Convert<K>(xp[i]), m[ch], scale[ch], shift[ch]), rp, i);
            }
          }
        });
      });
      return;
    }
    WithEpilogue(c.attrs, [&]<bool kResidual, bool kRelu>() {
      ParallelFor(0, C, 1, [&](int64_t begin, int64_t end) {
        for (int64_t ch = begin; ch < end; ++ch) {
          // One pass for both moments, about a pivot (BnStatsOf).
          const double pivot = static_cast<double>(Convert<K>(xp[ch * HW]));
          const auto [s1, s2] = SumChannel(
              N, C, HW, ch, [&](int64_t i) { return static_cast<double>(Convert<K>(xp[i])) - pivot; },
              [&](int64_t i) {
                double d = static_cast<double>(Convert<K>(xp[i])) - pivot;
                return d * d;
              });
          const BnAffine<K> f = finish(ch, pivot, s1, s2);
          for (int64_t n = 0; n < N; ++n) {
            const int64_t base = (n * C + ch) * HW;
            for (int64_t j = 0; j < HW; ++j) {
              yp[base + j] = BnEpilogue<T, kResidual, kRelu>(BnNormalize(Convert<K>(xp[base + j]), f.m, f.scale, f.shift), rp,
                                                             base + j);
            }
          }
        }
      });
    });
  });
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

// grad_y over n values (a channels-last row, or a run of one channel's plane),
// masked by ReLU where the epilogue has it, into out (Note [Batch norm
// epilogue]). Per-value forward parameters (m, scale, shift) advance with the
// values when kRow (a row's channels), else stay put (one channel's run).
template <typename T, typename K, bool kResidual, bool kRelu, bool kRow>
inline void MaskedGrads(int64_t n, const T* __restrict gy, const T* __restrict x, const T* __restrict residual,
                        const K* __restrict m, const K* __restrict scale, const K* __restrict shift,
                        K* __restrict out) {
  for (int64_t i = 0; i < n; ++i) {
    const K g = Convert<K>(gy[i]);
    if constexpr (kRelu) {
      const int64_t p = kRow ? i : 0;
      out[i] = BnMaskedGrad<T, kResidual>(g, BnNormalize(Convert<K>(x[i]), m[p], scale[p], shift[p]), residual, i);
    } else {
      out[i] = g;
    }
  }
}

// g with its bits where keep, else +0: ThresholdBackward's `b > 0 ? a : 0`
// for a float g, without a branch (Note [Channel sums in registers]).
template <typename K>
inline K KeepIf(bool keep, K g) {
  using U = std::conditional_t<sizeof(K) == 8, uint64_t, uint32_t>;
  static_assert(sizeof(K) == sizeof(U));
  return std::bit_cast<K>(static_cast<U>(std::bit_cast<U>(g) & (U{0} - static_cast<U>(keep))));
}

// grad_y at flat index i of channels-last operands, masked by ReLU where the
// epilogue has it (as MaskedGrads masks it, bit for bit) but by bits
// (KeepIf), for SumRows (Note [Channel sums in registers]); m, scale, shift:
// the forward's affine map of i's channel (unused without ReLU).
template <typename T, bool kResidual, bool kRelu, typename K = Compute<T>>
inline K MaskedGrad(const T* __restrict gy, const T* __restrict x, const T* __restrict residual, int64_t i, K m,
                    K scale, K shift) {
  const K g = Convert<K>(gy[i]);
  if constexpr (!kRelu) {
    return g;
  } else {
    const K v = Convert<K>(BnEpilogue<T, kResidual, false>(BnNormalize(Convert<K>(x[i]), m, scale, shift), residual, i));
    return KeepIf(v > K(0), g);
  }
}

// in: grad_y, x (N, C, H, W), weight, mean, var (C) and, with attrs.relu, bias
// (C) and (attrs.residual) the residual (like x); x-shaped operands all
// contiguous or all channels-last; attrs.scalar: eps. out: grad_x (like x),
// grad_weight, grad_bias (C) and, with relu and a residual, grad_residual. With
// x̂ = (x - mean) * invstd and gy masked by ReLU (Note [Batch norm epilogue]):
// grad_bias = Σ gy, grad_weight = Σ gy x̂, and
// grad_x = weight * invstd * (gy - grad_bias / n - x̂ * grad_weight / n).
// The masked grad_y of a row (or plane) goes to a small buffer first, so every
// loop is a plain vectorizable one.
void BatchNormBackwardKernel(const KernelCall& c) {
  const Tensor &gy = c.in[0], &x = c.in[1], &w = c.in[2], &mean = c.in[3], &var = c.in[4];
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  const double eps = c.attrs.scalar, count = static_cast<double>(N * HW);
  VisitFloatingWithStats(c, x.dtype(), [&]<typename T, typename S>(TypeTag<T>, TypeTag<S>) {
    using K = Compute<T>;
    const T *gp = static_cast<const T*>(gy.raw_data()), *xp = static_cast<const T*>(x.raw_data());
    const T* wp = static_cast<const T*>(w.raw_data());
    const S *mp = static_cast<const S*>(mean.raw_data()), *vp = static_cast<const S*>(var.raw_data());
    const T* bp = c.attrs.relu ? static_cast<const T*>(c.in[5].raw_data()) : nullptr;
    const T* rp = c.attrs.relu && c.attrs.residual ? static_cast<const T*>(c.in[6].raw_data()) : nullptr;
    T* gxp = static_cast<T*>(c.out[0].raw_data());
    T *gwp = static_cast<T*>(c.out[1].raw_data()), *gbp = static_cast<T*>(c.out[2].raw_data());
    T* grp = rp ? static_cast<T*>(c.out[3].raw_data()) : nullptr;
    // The forward's affine maps, for ReLU's mask.
    BnAffines<K> fwd(C);  // zeros without ReLU (then unread)
    for (int64_t ch = 0; bp && ch < C; ++ch) {
      fwd.Set(ch, BnAffineOf<K, S>(mp[ch], vp[ch], Convert<K>(wp[ch]), Convert<K>(bp[ch]), eps));
    }
    std::vector<double> mean_d(C);
    for (int64_t ch = 0; ch < C; ++ch) mean_d[ch] = static_cast<double>(mp[ch]);
    // grad_bias, grad_weight and the coefficients of grad_x from the two sums.
    std::vector<K> k1(C), k2(C), k3(C), m(C);
    auto coefficients = [&](int64_t ch, double sum_gy, double sum_gy_xmu) {
      const BnBackward<K> b =
          BnBackwardOf(sum_gy, sum_gy_xmu, mean_d[ch], static_cast<double>(vp[ch]), count, Convert<K>(wp[ch]), eps);
      gbp[ch] = Convert<T>(b.grad_bias);
      gwp[ch] = Convert<T>(b.grad_weight);
      k1[ch] = b.k1, k2[ch] = b.k2, k3[ch] = b.k3, m[ch] = b.m;
    };
    WithEpilogue(c.attrs, [&]<bool kResidual, bool kRelu>() {
      if (ChannelsLast(x)) {  // x-shaped operands (N, H, W, C) in memory
        const int64_t R = N * HW;
        const K *fm = fwd.m.data(), *fs = fwd.scale.data(), *fb = fwd.shift.data();
        // Σ gy and Σ gy (x - mean) per channel (SumRows), gy masked by ReLU
        // as MaskedGrads masks it.
        const double* __restrict mu = mean_d.data();
        auto sums = SumRows<2>(R, C, [&](int64_t r, int64_t ch) {
          const int64_t i = r * C + ch;
          const double gd = static_cast<double>(MaskedGrad<T, kResidual, kRelu>(gp, xp, rp, i, fm[ch], fs[ch], fb[ch]));
          return std::array<double, 2>{gd, gd * (static_cast<double>(Convert<K>(xp[i])) - mu[ch])};
        });
        for (int64_t ch = 0; ch < C; ++ch) coefficients(ch, sums[ch][0], sums[ch][1]);
        ParallelFor(0, R, 64, [&](int64_t begin, int64_t end) {
          std::vector<K> row(C);
          K* __restrict g = row.data();
          const K *__restrict a = k1.data(), *__restrict bb = k2.data(), *__restrict cc = k3.data(),
                  *__restrict mm = m.data();
          for (int64_t r = begin; r < end; ++r) {
            const T* __restrict xr = xp + r * C;
            T* __restrict gx = gxp + r * C;
            if constexpr (kRelu) {
              MaskedGrads<T, K, kResidual, kRelu, true>(C, gp + r * C, xr, rp ? rp + r * C : nullptr, fm, fs, fb, g);
              for (int64_t ch = 0; ch < C; ++ch) gx[ch] = Convert<T>(a[ch] * g[ch] + bb[ch] * (Convert<K>(xr[ch]) - mm[ch]) + cc[ch]);
            } else {  // grad_y as it is (no copy into the row)
              const T* __restrict gyr = gp + r * C;
              for (int64_t ch = 0; ch < C; ++ch) {
                gx[ch] = Convert<T>(a[ch] * Convert<K>(gyr[ch]) + bb[ch] * (Convert<K>(xr[ch]) - mm[ch]) + cc[ch]);
              }
            }
            if constexpr (kRelu && kResidual) {
              T* __restrict gr = grp + r * C;
              for (int64_t ch = 0; ch < C; ++ch) gr[ch] = Convert<T>(g[ch]);
            }
          }
        });
        return;
      }
      // NCHW: one channel's planes at a time, sums in 8 lanes as SumChannel.
      ParallelFor(0, C, 1, [&](int64_t begin, int64_t end) {
        std::vector<K> plane(HW);
        K* __restrict g = plane.data();
        for (int64_t ch = begin; ch < end; ++ch) {
          const K* fm = kRelu ? &fwd.m[ch] : nullptr;
          const K* fs = kRelu ? &fwd.scale[ch] : nullptr;
          const K* fb = kRelu ? &fwd.shift[ch] : nullptr;
          auto masked = [&](int64_t n) {
            const int64_t base = (n * C + ch) * HW;
            MaskedGrads<T, K, kResidual, kRelu, false>(HW, gp + base, xp + base, rp ? rp + base : nullptr, fm, fs, fb,
                                                       g);
            return base;
          };
          const double mu = mean_d[ch];
          double p0[8] = {}, p1[8] = {};
          for (int64_t n = 0; n < N; ++n) {
            const T* __restrict xr = xp + masked(n);
            int64_t j = 0;
            for (; j + 8 <= HW; j += 8) {
              for (int l = 0; l < 8; ++l) {
                const double gd = static_cast<double>(g[j + l]);
                p0[l] += gd;
                p1[l] += gd * (static_cast<double>(Convert<K>(xr[j + l])) - mu);
              }
            }
            for (; j < HW; ++j) {
              const double gd = static_cast<double>(g[j]);
              p0[0] += gd;
              p1[0] += gd * (static_cast<double>(Convert<K>(xr[j])) - mu);
            }
          }
          auto total = [](const double* p) { return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7])); };
          coefficients(ch, total(p0), total(p1));
          const K a = k1[ch], bb = k2[ch], cc = k3[ch], mm = m[ch];
          for (int64_t n = 0; n < N; ++n) {
            const int64_t base = masked(n);
            const T* __restrict xr = xp + base;
            T* __restrict gx = gxp + base;
            for (int64_t j = 0; j < HW; ++j) gx[j] = Convert<T>(a * g[j] + bb * (Convert<K>(xr[j]) - mm) + cc);
            if constexpr (kRelu && kResidual) {
              T* __restrict gr = grp + base;
              for (int64_t j = 0; j < HW; ++j) gr[j] = Convert<T>(g[j]);
            }
          }
        }
      });
    });
  });
}

// Note [Fused layer norm]
// Written with core ops, layer norm is nine passes over x, each a parallel
// region of its own (a sum and a scale for the mean, a subtract, a square, the
// variance's sum and scale, an rsqrt, two multiplies and an add), and softmax
// five (max, subtract, exp, sum, divide). In BERT-base's int8 forward they were
// most of the time outside the integer GEMMs (perf, docs/benchmarks.md). Here
// each row (layer norm: the D values of the normalized trailing dims; softmax:
// the values along its dim) is read for its statistics and written once, in one
// parallel region per call; BERT's rows (768 values, 128 scores) stay in L1
// between the passes. Sums are f64 over 8 partial sums (Note [Dense
// sums]), so the loops vectorize and the order is fixed. Layer norm takes
// the variance about the mean in a second pass, as the composition does (no
// cancellation); softmax rounds exp(x - max) to the dtype before summing, as
// the composition does, and multiplies by 1/sum where the composition divides
// (an ulp or two apart). At f32 the kernels and the compositions
// agree to a few ulps (tests/nn/layers_test.cc holds them, gradients included,
// within 2e-5 relative; f64 within 1e-12).

// Rows per parallel chunk: about 16K values.
int64_t RowGrain(int64_t row_values) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(row_values, 1)); }

// in: x (contiguous), weight and bias (x's trailing shape, D values); attrs.scalar:
// eps. out: y (like x), mean and rstd (one per row of D values).
void LayerNormKernel(const KernelCall& c) {
  const Tensor &x = c.in[0], &w = c.in[1], &b = c.in[2];
  const int64_t D = w.numel(), R = c.out[1].numel();
  const double eps = c.attrs.scalar;
  VisitFloatingWithStats(c, x.dtype(), [&]<typename T, typename S>(TypeTag<T>, TypeTag<S>) {
    using K = Compute<T>;
    const T* xp = static_cast<const T*>(x.raw_data());
    const T *wp = static_cast<const T*>(w.raw_data()), *bp = static_cast<const T*>(b.raw_data());
    T* yp = static_cast<T*>(c.out[0].raw_data());
    S *mp = static_cast<S*>(c.out[1].raw_data()), *rp = static_cast<S*>(c.out[2].raw_data());
    ParallelFor(0, R, RowGrain(D), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T* __restrict xr = xp + r * D;
        T* __restrict yr = yp + r * D;
        const double mean = DenseSum(D, [&](int64_t j) { return static_cast<double>(Convert<K>(xr[j])); }) / D;
        const double var = DenseSum(D, [&](int64_t j) {
                             const double d = static_cast<double>(Convert<K>(xr[j])) - mean;
                             return d * d;
                           }) / D;
        const double rstd = 1 / std::sqrt(var + eps);
        mp[r] = static_cast<S>(mean);
        rp[r] = static_cast<S>(rstd);
        const K m = static_cast<K>(mean), s = static_cast<K>(rstd);
        for (int64_t j = 0; j < D; ++j) {
          yr[j] = Convert<T>((Convert<K>(xr[j]) - m) * s * Convert<K>(wp[j]) + Convert<K>(bp[j]));
        }
      }
    });
  });
}

// in: x (contiguous); attrs.dims: {the softmax's dim}. out: y (like x). A NaN
// anywhere in a row makes the whole row NaN, as +inf does (inf - inf), as in
// the composition.
void SoftmaxKernel(const KernelCall& c) {
  const Tensor& x = c.in[0];
  const int d = static_cast<int>(c.attrs.dims[0]);
  int64_t outer = 1, inner = 1;
  const int64_t n = x.size(d);
  for (int i = 0; i < d; ++i) outer *= x.size(i);
  for (int i = d + 1; i < x.dim(); ++i) inner *= x.size(i);
  VisitFloatingWithStats(c, x.dtype(), [&]<typename T, typename S>(TypeTag<T>, TypeTag<S>) {
    using K = Compute<T>;
    const T* xp = static_cast<const T*>(x.raw_data());
    T* yp = static_cast<T*>(c.out[0].raw_data());
    if (inner == 1) {  // rows of n contiguous values (the last dim)
      ParallelFor(0, outer, RowGrain(n), [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const T* __restrict xr = xp + r * n;
          T* __restrict yr = yp + r * n;
          bool nan;  // a NaN makes the row NaN through x - m below
          const K m = DenseExtreme<true, K>(xr, n, &nan);
          for (int64_t j = 0; j < n; ++j) yr[j] = Convert<T>(ExpFn{}(Convert<K>(xr[j]) - m));
          const K sum = static_cast<K>(DenseSum(n, [&](int64_t j) { return static_cast<double>(Convert<K>(yr[j])); }));
          const K inv = 1 / sum;  // a multiply per value: vdivps was a third of the kernel's time
          for (int64_t j = 0; j < n; ++j) yr[j] = Convert<T>(Convert<K>(yr[j]) * inv);
        }
      });
      return;
    }
    // Along an inner dim: the inner values side by side, each with its own max and sum.
    ParallelFor(0, outer, 1, [&](int64_t begin, int64_t end) {
      std::vector<K> m(inner);
      std::vector<double> sum(inner);
      for (int64_t o = begin; o < end; ++o) {
        const T* __restrict xo = xp + o * n * inner;
        T* __restrict yo = yp + o * n * inner;
        std::fill(m.begin(), m.end(), -std::numeric_limits<K>::infinity());
        std::fill(sum.begin(), sum.end(), 0.0);
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t j = 0; j < inner; ++j) m[j] = std::max(m[j], Convert<K>(xo[i * inner + j]));
        }
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t j = 0; j < inner; ++j) {
            const T e = Convert<T>(ExpFn{}(Convert<K>(xo[i * inner + j]) - m[j]));
            yo[i * inner + j] = e;
            sum[j] += static_cast<double>(Convert<K>(e));
          }
        }
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t j = 0; j < inner; ++j) {
            yo[i * inner + j] = Convert<T>(Convert<K>(yo[i * inner + j]) / static_cast<K>(sum[j]));
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
  t[static_cast<int>(Op::kLayerNorm)] = &LayerNormKernel;
  t[static_cast<int>(Op::kSoftmax)] = &SoftmaxKernel;
}

}  // namespace quanta::cpu
