// Reference kernels: the integer matmul and convolution of converted models, i32
// accumulation, then the post-ops and the f32 or requantized output (Note [One
// quantization formula] in core/scalar_ops.h). Apart from quantize and fake
// quantization (reference_quantization.cc) so that neither file takes long to
// compile.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backends/cpu/reference_common.h"

namespace quanta::cpu {
namespace {

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

}  // namespace

void AddIntegerKernels(KernelTable& t) {
  t[static_cast<int>(Op::kQuantizedMatmul)] = &QuantizedMatmulKernel;
  t[static_cast<int>(Op::kQuantizedConv2d)] = &QuantizedConv2dKernel;
}

}  // namespace quanta::cpu
