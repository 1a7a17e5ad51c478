// Reference kernels: gather, scatter-add and max pooling (forward and backward).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backends/cpu/reference_common.h"

namespace quanta::cpu {
namespace {

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

// x (N, C, H, W) -> y, argmax (N, C, OH, OW); argmax is h * W + w in the plane,
// left out (undefined) when the frontend needs no gradient.
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
  // Calls f(ih, iw) for the valid taps of output (oh, ow), row by row.
  auto for_each_tap = [&](int64_t oh, int64_t ow, auto&& f) {
    for (int64_t a = 0; a < th[oh].second; ++a) {
      const int64_t ih = oh * at.stride[0] - at.padding[0] + (th[oh].first + a) * at.dilation[0];
      for (int64_t b = 0; b < tw[ow].second; ++b) {
        f(ih, ow * at.stride[1] - at.padding[1] + (tw[ow].first + b) * at.dilation[1]);
      }
    }
  };
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
      if (!idx.defined()) {
        // Note [Max pooling without indices]: in inference (nothing will take the
        // gradient) the frontend asks for values only. Without an argmax to keep,
        // the max is branch-free: channels-last takes the first tap's row of C
        // values and folds every other tap's row into it (a loop the compiler
        // vectorizes: 64 quint8 channels are one AVX-512 compare); a NaN wins as
        // it does above.
        auto fold = [&](T* yrow, const T* xrow, int64_t count, bool first) {
          if (first) {
            std::memcpy(yrow, xrow, count * sizeof(T));
            return;
          }
          for (int64_t ch = 0; ch < count; ++ch) {
            if constexpr (std::is_same_v<T, C_>) {
              T v = xrow[ch], b = yrow[ch];
              if constexpr (std::is_floating_point_v<T>) yrow[ch] = (v > b || v != v) ? v : b;
              else yrow[ch] = v > b ? v : b;
            } else if (better(Convert<C_>(xrow[ch]), Convert<C_>(yrow[ch]))) {
              yrow[ch] = xrow[ch];
            }
          }
        };
        if (channels_last) {
          ParallelFor(0, N * OH, 1, [&](int64_t begin, int64_t end) {
            for (int64_t r = begin; r < end; ++r) {
              int64_t n = r / OH, oh = r % OH;
              for (int64_t ow = 0; ow < OW; ++ow) {
                T* yrow = yp + ((n * OH + oh) * OW + ow) * C;
                bool first = true;
                for_each_tap(oh, ow, [&](int64_t ih, int64_t iw) {
                  fold(yrow, xp + ((n * H + ih) * W + iw) * C, C, first);
                  first = false;
                });
              }
            }
          });
        } else {
          ParallelFor(0, N * C, 1, [&](int64_t begin, int64_t end) {
            for (int64_t p = begin; p < end; ++p) {
              const T* plane = xp + p * H * W;
              for (int64_t oh = 0; oh < OH; ++oh) {
                for (int64_t ow = 0; ow < OW; ++ow) {
                  T* out = yp + (p * OH + oh) * OW + ow;
                  bool first = true;
                  for_each_tap(oh, ow, [&](int64_t ih, int64_t iw) {
                    fold(out, plane + ih * W + iw, 1, first);
                    first = false;
                  });
                }
              }
            }
          });
        }
        return;
      }
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
              for_each_tap(oh, ow, [&](int64_t ih, int64_t iw) {
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
              });
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
              for_each_tap(oh, ow, [&](int64_t ih, int64_t iw) {
                const int64_t i = ih * W + iw;
                C_ v = Convert<C_>(plane[i]);
                if (best_i < 0 || better(v, best)) {
                  best = v;
                  best_i = i;
                }
              });
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

}  // namespace

void AddIndexingKernels(KernelTable& t) {
  t[static_cast<int>(Op::kGather)] = &GatherKernel;
  t[static_cast<int>(Op::kScatterAdd)] = &ScatterAddKernel;
  t[static_cast<int>(Op::kMaxPool2d)] = &MaxPool2dKernel;
  t[static_cast<int>(Op::kMaxPool2dBackward)] = &MaxPool2dBackwardKernel;
}

}  // namespace quanta::cpu
