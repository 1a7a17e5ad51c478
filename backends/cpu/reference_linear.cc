// Reference kernels: matmul and convolution, forward and backward.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backends/cpu/reference_common.h"

namespace quanta::cpu {
namespace {

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
// The convolution loops below index contiguous (N, C, H, W) tensors; channels-
// last operands (a channels-last network's activations) go through contiguous
// copies. True when it ran `kernel` so.
bool RanContiguous(const KernelCall& c, void (*kernel)(const KernelCall&)) {
  bool strided = false;
  for (const Tensor& t : c.in) strided = strided || (t.defined() && !t.is_contiguous());
  for (const Tensor& t : c.out) strided = strided || (t.defined() && !t.is_contiguous());
  if (!strided) return false;
  std::vector<Tensor> in, out;
  for (const Tensor& t : c.in) in.push_back(t.Contiguous());
  for (const Tensor& t : c.out) out.push_back(Tensor::Empty(t.shape(), t.dtype(), t.device()));
  kernel(KernelCall{c.op, in, out, c.attrs});
  for (size_t i = 0; i < out.size(); ++i) {
    Tensor target = c.out[i];
    target.CopyFrom(out[i]);
  }
  return true;
}

void Conv2dKernel(const KernelCall& c) {
  if (RanContiguous(c, &Conv2dKernel)) return;
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

// grad_out (N, O, OH, OW), w (O, C/G, KH, KW) -> grad_in (N, C, H, W): the
// transpose of Conv2dKernel's loop, accumulating per input element.
void Conv2dBackwardInputKernel(const KernelCall& c) {
  if (RanContiguous(c, &Conv2dBackwardInputKernel)) return;
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
  if (RanContiguous(c, &Conv2dBackwardWeightKernel)) return;
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

}  // namespace

void AddLinearKernels(KernelTable& t) {
  t[static_cast<int>(Op::kMatmul)] = &MatmulKernel;
  t[static_cast<int>(Op::kConv2d)] = &Conv2dKernel;
  t[static_cast<int>(Op::kConv2dBackwardInput)] = &Conv2dBackwardInputKernel;
  t[static_cast<int>(Op::kConv2dBackwardWeight)] = &Conv2dBackwardWeightKernel;
}

}  // namespace quanta::cpu
