// Reference kernels: quantize, dequantize and fake quantization (Note [One
// quantization formula] in core/scalar_ops.h); the integer matmul and
// convolution are in reference_integer.cc.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backends/cpu/cpu_backend.h"
#include "backends/cpu/reference_common.h"
#include "core/minifloat.h"

namespace quanta::cpu {
namespace {

// Note [Fake-quant runs]: when x and the other dense operands are laid out
// alike with no gaps (all contiguous, or all channels-last: contiguous once
// permuted into x's memory order) and scale and zero point vary along at most
// one dim (per tensor or per channel), the work is (outer, channel, inner) runs
// of memory with constant parameters: a loop the compiler vectorizes. Fills
// *runs and returns true when that layout holds. In channels-last memory a
// per-channel axis 1 is the innermost dim: runs of one value, still correct.
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
  const std::vector<int64_t> order = MemoryOrder(x);
  for (const Tensor* t : dense) {
    if (t->shape() != x.shape()) return false;
    int64_t expected = 1;
    for (int k = x.dim() - 1; k >= 0; --k) {
      const int64_t d = order[k];
      if (x.size(d) == 1) continue;
      if (t->stride(d) != expected) return false;
      expected *= x.size(d);
    }
  }
  int axis = -1;  // a position in `order`
  for (int k = 0; k < x.dim(); ++k) {
    if (param.stride(order[k]) != 0 && x.size(order[k]) != 1) {
      if (axis >= 0) return false;
      axis = k;
    }
  }
  if (axis >= 0) {
    runs->channels = x.size(order[axis]);
    runs->param_stride = param.stride(order[axis]);
    for (int k = 0; k < axis; ++k) runs->outer *= x.size(order[k]);
    for (int k = axis + 1; k < x.dim(); ++k) runs->inner *= x.size(order[k]);
  } else {
    runs->inner = x.numel();
  }
  return true;
}

// Note [Per-tensor runs]: with one scale and zero point (both spread from a
// single value: every stride 0 but those of size-1 dims), any strides are runs
// of constant parameters. The dims are visited in the read operand's memory
// order (its strides, largest first), so that quantizing NCHW images into a
// channels-last tensor, or dequantizing a channels-last slice, reads memory in
// order and the inner loop runs over the long merged dim, not over the three
// channels.
//
// A dim of size 1 keeps whatever stride it had (Expand leaves it alone), so only
// the others must be 0: a batch of one image spreads its one scale with a
// nonzero batch stride. Counting that dim sent ResNet-50's batch-1 input
// (1x3x224x224, NCHW into channels-last) to the general loop: 3.3% of its int8
// forward's samples (perf, bench_infer --only=resnet50 --profile=int8).
bool PerTensorParams(const Tensor& scale, const Tensor& zp) {
  auto spread = [](const Tensor& t) {
    for (int d = 0; d < t.dim(); ++d) {
      if (t.size(d) > 1 && t.stride(d) != 0) return false;
    }
    return true;
  };
  return spread(scale) && spread(zp);
}

std::atomic<size_t> general_loops{0};

// `read` and `write` permuted alike so that `read`'s strides decrease.
std::pair<Tensor, Tensor> InReadOrder(const Tensor& read, const Tensor& write) {
  const std::vector<int64_t> perm = MemoryOrder(read);
  return {read.Permute(perm), write.Permute(perm)};
}

// Calls f(in, out, n, in_stride, out_stride) over runs of `read` and `write`.
template <typename In, typename Out, typename F>
void ForEachPerTensorRun(const Tensor& read, const Tensor& write, F&& f) {
  auto [r, w] = InReadOrder(read, write);
  const In* in = static_cast<const In*>(StorageBase(r));
  Out* out = static_cast<Out*>(StorageBase(w));
  ForEachRunStrided<2>(w.shape(), {&w, &r}, [&](const std::array<int64_t, 2>& o, int64_t n,
                                                const std::array<int64_t, 2>& st) {
    f(in + o[1], out + o[0], n, st[1], st[0]);
  });
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
        if (PerTensorParams(scale, zp)) {  // Note [Per-tensor runs]
          const C s = static_cast<C>(static_cast<const double*>(StorageBase(scale))[scale.offset()]);
          const C z = static_cast<C>(static_cast<const double*>(StorageBase(zp))[zp.offset()]);
          ForEachPerTensorRun<T, Elem<Q>>(x, q, [&](const T* in, Elem<Q>* out, int64_t n, int64_t si, int64_t so) {
            const C lo = qmin, hi = qmax;
            if (si == 1 && so == 1) {
              for (int64_t i = 0; i < n; ++i) out[i] = Convert<Elem<Q>>(QuantizeValue<C>(Convert<C>(in[i]), s, z, lo, hi));
            } else if (si == 1) {
              // Dense reads, strided writes (an NCHW image into channels-last: the
              // integer models' input): quantized in dense chunks, a loop that
              // vectorizes, then stored with the stride (the one loop, scalar
              // throughout, was 1% of ResNet-50's batch-1 int8 forward).
              constexpr int64_t kChunk = 256;
              Elem<Q> chunk[kChunk];
              for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
                const int64_t m = std::min(kChunk, n - i0);
                for (int64_t i = 0; i < m; ++i) chunk[i] = Convert<Elem<Q>>(QuantizeValue<C>(Convert<C>(in[i0 + i]), s, z, lo, hi));
                for (int64_t i = 0; i < m; ++i) out[(i0 + i) * so] = chunk[i];
              }
            } else {
              for (int64_t i = 0; i < n; ++i) {
                out[i * so] = Convert<Elem<Q>>(QuantizeValue<C>(Convert<C>(in[i * si]), s, z, lo, hi));
              }
            }
          });
          return;
        }
      }
      general_loops.fetch_add(1, std::memory_order_relaxed);
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
      using C = Compute<T>;
      if constexpr (!std::is_same_v<Q, QInt4x2>) {
        ChannelRuns runs;
        if (scale.strides() == zp.strides() && AsChannelRuns(q, scale, {&q, &x}, &runs)) {  // Note [Fake-quant runs]
          const Elem<Q>* qp = static_cast<const Elem<Q>*>(StorageBase(q)) + q.offset();
          T* xp = x.data<T>();
          const double* sp = static_cast<const double*>(StorageBase(scale)) + scale.offset();
          const double* zpp = static_cast<const double*>(StorageBase(zp)) + zp.offset();
          ForEachRun(runs, [&](int64_t b, int64_t e, int64_t ch) {
            const C s = static_cast<C>(sp[ch * runs.param_stride]), z = static_cast<C>(zpp[ch * runs.param_stride]);
            const Elem<Q>* in = qp;
            T* out = xp;
            for (int64_t i = b; i < e; ++i) out[i] = Convert<T>(DequantizeValue<C>(Convert<C>(in[i]), s, z));
          });
          return;
        }
        if (PerTensorParams(scale, zp)) {  // Note [Per-tensor runs]
          const C s = static_cast<C>(static_cast<const double*>(StorageBase(scale))[scale.offset()]);
          const C z = static_cast<C>(static_cast<const double*>(StorageBase(zp))[zp.offset()]);
          ForEachPerTensorRun<Elem<Q>, T>(q, x, [&](const Elem<Q>* in, T* out, int64_t n, int64_t si, int64_t so) {
            if (si == 1 && so == 1) {
              for (int64_t i = 0; i < n; ++i) out[i] = Convert<T>(DequantizeValue<C>(Convert<C>(in[i]), s, z));
            } else {
              for (int64_t i = 0; i < n; ++i) out[i * so] = Convert<T>(DequantizeValue<C>(Convert<C>(in[i * si]), s, z));
            }
          });
          return;
        }
      }
      general_loops.fetch_add(1, std::memory_order_relaxed);
      const void *qp = StorageBase(q), *sp = StorageBase(scale), *zpp = StorageBase(zp);
      void* xp = StorageBase(x);
      ForEachStrided<4>(x.shape(), {&x, &q, &scale, &zp}, [&](const std::array<int64_t, 4>& o) {
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

// grad, x, scale, zero point (one shape and dtype) -> grads of x, scale, zero
// point; an output left undefined is not needed (FakeQuantizeBackward's
// `needed`) and not written.
void FakeQuantizeBackwardKernel(const KernelCall& c) {
  const Tensor &g = c.in[0], &x = c.in[1], &scale = c.in[2], &zp = c.in[3];
  const OpAttrs& at = c.attrs;
  bool ewgs = at.fake_quant_gradient == static_cast<int>(FakeQuantGradient::kEwgs);
  // Dense runs (the usual case) write only what is asked for; the strided
  // fallback writes every gradient, the unneeded ones into scratch.
  std::array<Tensor, 3> out = {c.out[0], c.out[1], c.out[2]};
  const std::array<bool, 3> want = {out[0].defined(), out[1].defined(), out[2].defined()};
  // Parameter gradients of another shape than x's are summed per channel.
  const bool summed = (want[1] && out[1].shape() != x.shape()) || (want[2] && out[2].shape() != x.shape());
  auto fill_scratch = [&] {  // the outputs not asked for, where a pass writes all three
    for (Tensor& t : out) {
      if (!t.defined()) t = Tensor::Empty(x.shape(), x.dtype(), x.device());
    }
  };
  VisitPlain(c, x.dtype(), [&]<typename T>(TypeTag<T>) {
    using C = Compute<T>;
    const C qmin = static_cast<C>(at.quant_min), qmax = static_cast<C>(at.quant_max);
    const C delta = static_cast<C>(at.ewgs_delta), grad_scale = static_cast<C>(at.lsq_grad_scale);
    // Scale and zero-point gradients summed per channel in the pass (Note
    // [Fake-quant parameter sums] in core/ops.cc; FakeQuantizeBackwardSummed
    // hands over x and grad dense and alike): x is cut into fixed blocks whatever
    // the thread count, each block sums per channel in f64, and the blocks'
    // sums are added in order, so the result does not depend on the threads.
    auto run_summed = [&]<bool kEwgs, bool kX, bool kZero>() {
      ChannelRuns runs;
      const Tensor& gx = kX ? out[0] : x;
      QUANTA_CHECK(scale.strides() == zp.strides() && AsChannelRuns(x, scale, {&x, &g, &gx}, &runs),
                   "fake_quantize_backward: summed parameter gradients need x, grad and grad_x dense and alike (",
                   g.Describe(), ", ", x.Describe(), ")");
      const int64_t numel = x.numel(), channels = runs.channels, block = 32768;
      const int64_t blocks = (numel + block - 1) / block;
      QUANTA_CHECK(out[1].numel() == channels && (!kZero || out[2].numel() == channels),
                   "fake_quantize_backward: ", channels, " summed gradients expected, got ", out[1].Describe());
      std::vector<double> part_s(blocks * channels, 0.0), part_z(kZero ? blocks * channels : 0, 0.0);
      const T *xp = x.data<T>(), *gp0 = g.data<T>();
      const T* sp0 = static_cast<const T*>(StorageBase(scale)) + scale.offset();
      const T* zp0 = static_cast<const T*>(StorageBase(zp)) + zp.offset();
      T* gx0 = kX ? gx.data<T>() : nullptr;
      ParallelFor(0, blocks, 1, [&](int64_t kb, int64_t ke) {
        for (int64_t k = kb; k < ke; ++k) {
          double* ps = part_s.data() + k * channels;
          double* pz = kZero ? part_z.data() + k * channels : nullptr;
          for (int64_t b = k * block, e = std::min(numel, b + block); b < e;) {
            const int64_t run = b / runs.inner, stop = std::min(e, (run + 1) * runs.inner), ch = run % channels;
            const C s = Convert<C>(sp0[ch * runs.param_stride]), z = Convert<C>(zp0[ch * runs.param_stride]);
            // Note [Sums in lanes]: one running f64 sum is a chain of dependent
            // adds, one element per add's latency, and it kept the whole loop
            // scalar: LSQ's backward made its QAT step the slowest (bench_quant,
            // ResNet-20: 1.16-1.18x the f32 step against EMA's 1.05-1.07x). The
            // run goes in chunks: the elementwise gradients into small buffers
            // (a loop that vectorizes as FakeQuantize's does), then the buffers
            // into kLanes independent f64 sums. A standalone copy of the loop
            // (g++ 12 -O3, Zen 4, one thread) went from 938 to 2464 M elements/s
            // (x and scale) and from 733 to 1561 (with the zero point). The
            // blocks stay fixed, so the result still does not depend on the
            // thread count.
            constexpr int64_t kLanes = 16, kChunk = 256;
            double lane_s[kLanes] = {}, lane_z[kLanes] = {};
            C chunk_s[kChunk], chunk_z[kChunk];
            for (int64_t i = b; i < stop; i += kChunk) {
              const int64_t n = std::min(kChunk, stop - i);
              for (int64_t j = 0; j < n; ++j) {
                FakeQuantGrads<C> r = FakeQuantizeGradients<C, kEwgs>(Convert<C>(gp0[i + j]), Convert<C>(xp[i + j]), s,
                                                                      z, qmin, qmax, delta);
                if constexpr (kX) gx0[i + j] = Convert<T>(r.x);
                chunk_s[j] = r.scale;
                if constexpr (kZero) chunk_z[j] = r.zero_point;
              }
              const int64_t padded = (n + kLanes - 1) / kLanes * kLanes;
              for (int64_t j = n; j < padded; ++j) chunk_s[j] = C(0), chunk_z[j] = C(0);
              for (int64_t j = 0; j < padded; j += kLanes) {
                for (int64_t l = 0; l < kLanes; ++l) {
                  lane_s[l] += static_cast<double>(chunk_s[j + l]);
                  if constexpr (kZero) lane_z[l] += static_cast<double>(chunk_z[j + l]);
                }
              }
            }
            double sum_s = 0, sum_z = 0;
            for (int64_t l = 0; l < kLanes; ++l) sum_s += lane_s[l], sum_z += lane_z[l];
            ps[ch] += sum_s;
            if constexpr (kZero) pz[ch] += sum_z;
            b = stop;
          }
        }
      });
      T* gs = out[1].data<T>();
      T* gz = kZero ? out[2].data<T>() : nullptr;
      for (int64_t ch = 0; ch < channels; ++ch) {
        double ts = 0, tz = 0;
        for (int64_t k = 0; k < blocks; ++k) {
          ts += part_s[k * channels + ch];
          if constexpr (kZero) tz += part_z[k * channels + ch];
        }
        gs[ch] = Convert<T>(static_cast<C>(ts * static_cast<double>(grad_scale)));
        if constexpr (kZero) gz[ch] = Convert<T>(static_cast<C>(tz));
      }
    };
    auto run = [&]<bool kEwgs, bool kX, bool kScale, bool kZero>() {
      ChannelRuns runs;
      // x stands in for an output not asked for in the contiguity check.
      const Tensor &gx = kX ? out[0] : x, &gs = kScale ? out[1] : x, &gz = kZero ? out[2] : x;
      if (scale.strides() == zp.strides() && AsChannelRuns(x, scale, {&x, &g, &gx, &gs, &gz}, &runs)) {
        const T *xp = x.data<T>(), *gp0 = g.data<T>();
        const T* sp0 = static_cast<const T*>(StorageBase(scale)) + scale.offset();
        const T* zp0 = static_cast<const T*>(StorageBase(zp)) + zp.offset();
        T* gx0 = kX ? gx.data<T>() : nullptr;
        T* gs0 = kScale ? gs.data<T>() : nullptr;
        T* gz0 = kZero ? gz.data<T>() : nullptr;
        ForEachRun(runs, [&](int64_t b, int64_t e, int64_t ch) {
          const C s = Convert<C>(sp0[ch * runs.param_stride]), z = Convert<C>(zp0[ch * runs.param_stride]);
          for (int64_t i = b; i < e; ++i) {
            FakeQuantGrads<C> r =
                FakeQuantizeGradients<C, kEwgs>(Convert<C>(gp0[i]), Convert<C>(xp[i]), s, z, qmin, qmax, delta);
            if constexpr (kX) gx0[i] = Convert<T>(r.x);
            if constexpr (kScale) gs0[i] = Convert<T>(r.scale * grad_scale);
            if constexpr (kZero) gz0[i] = Convert<T>(r.zero_point);
          }
        });
        return;
      }
      fill_scratch();
      const std::array<Tensor, 3>& all = out;
      const void *gp = StorageBase(g), *xp = StorageBase(x), *sp = StorageBase(scale), *zpp = StorageBase(zp);
      void *gxp = StorageBase(all[0]), *gsp = StorageBase(all[1]), *gzp = StorageBase(all[2]);
      auto load = [](const void* base, int64_t i) { return Convert<C>(LoadAt<T>(base, i)); };
      ForEachStrided<7>(x.shape(), {&all[0], &all[1], &all[2], &g, &x, &scale, &zp},
                        [&](const std::array<int64_t, 7>& o) {
                          FakeQuantGrads<C> r = FakeQuantizeGradients<C, kEwgs>(load(gp, o[3]), load(xp, o[4]),
                                                                                load(sp, o[5]), load(zpp, o[6]), qmin,
                                                                                qmax, delta);
                          StoreAt<T>(gxp, o[0], Convert<T>(r.x));
                          StoreAt<T>(gsp, o[1], Convert<T>(r.scale * grad_scale));
                          StoreAt<T>(gzp, o[2], Convert<T>(r.zero_point));
                        });
    };
    // The combinations autograd asks for: x alone (an observer's quantizer),
    // x and scale (symmetric LSQ), all three (LSQ+), and scale alone or with the
    // zero point (LSQ on a weight or an input that needs no gradient).
    auto dispatch = [&]<bool kEwgs>() {
      if (summed) {  // the combinations with a scale gradient (LSQ)
        QUANTA_CHECK(want[1], "fake_quantize_backward: summed gradients without the scale's");
        if (want[0] && !want[2]) return run_summed.template operator()<kEwgs, true, false>();
        if (want[0] && want[2]) return run_summed.template operator()<kEwgs, true, true>();
        if (!want[0] && !want[2]) return run_summed.template operator()<kEwgs, false, false>();
        return run_summed.template operator()<kEwgs, false, true>();
      }
      if (want[0] && !want[1] && !want[2]) return run.template operator()<kEwgs, true, false, false>();
      if (want[0] && want[1] && !want[2]) return run.template operator()<kEwgs, true, true, false>();
      if (!want[0] && want[1] && !want[2]) return run.template operator()<kEwgs, false, true, false>();
      if (!want[0] && want[1] && want[2]) return run.template operator()<kEwgs, false, true, true>();
      fill_scratch();  // all three, or a combination autograd never asks for
      run.template operator()<kEwgs, true, true, true>();
    };
    if (ewgs) {
      dispatch.template operator()<true>();
    } else {
      dispatch.template operator()<false>();
    }
  });
}

// Block-scaled minifloats (Note [Block scaling] in core/minifloat.h). x and the
// outputs are contiguous; a block is rows x cols of the last two dims. Blocks run
// in parallel unless a block's codes do not end on a byte (sub-byte elements).
struct BlockGeometry {
  int64_t rows, cols;          // one block
  int64_t matrix_rows, matrix_cols;  // the last two dims (1 x n for a vector)
  int64_t blocks_down, blocks_across, n_blocks;

  explicit BlockGeometry(const KernelCall& c, const Tensor& x) {
    rows = c.attrs.block[0];
    cols = c.attrs.block[1];
    matrix_cols = x.size(-1);
    matrix_rows = x.dim() >= 2 ? x.size(-2) : 1;
    blocks_down = matrix_rows / rows;
    blocks_across = matrix_cols / cols;
    n_blocks = x.numel() / (rows * cols);
  }
  // Block b's first element in x; element (r, k) of the block is at
  // Start(b) + r * matrix_cols + k.
  int64_t Start(int64_t b) const {
    int64_t matrix = b / (blocks_down * blocks_across), in_matrix = b % (blocks_down * blocks_across);
    return (matrix * matrix_rows + in_matrix / blocks_across * rows) * matrix_cols + in_matrix % blocks_across * cols;
  }
  template <typename F>
  void ForEachBlock(int element_bits, F&& f) const {
    const bool serial = (cols * element_bits) % 8 != 0;
    ParallelFor(0, n_blocks, serial ? std::max<int64_t>(1, n_blocks) : std::max<int64_t>(1, 16384 / (rows * cols)),
                [&](int64_t begin, int64_t end) {
                  for (int64_t b = begin; b < end; ++b) f(b);
                });
  }
};

const MiniFloatFormat* ScaleFormat(DType d) { return d == DType::kF32 ? nullptr : &MiniFloatOf(d); }

void BlockQuantizeKernel(const KernelCall& c) {
  const Tensor& x = c.in[0];
  const float g = *static_cast<const float*>(c.in[1].raw_data());
  const Tensor &codes = c.out[0], &scales = c.out[1];
  const BlockGeometry geo(c, x);
  const MiniFloatFormat& element = MiniFloatOf(codes.dtype());
  const MiniFloatFormat* scale_format = ScaleFormat(scales.dtype());
  const int bits = Info(codes.dtype()).bits;
  auto* cp = static_cast<uint8_t*>(codes.raw_data());
  void* sp = scales.raw_data();
  VisitPlain(c, x.dtype(), [&]<typename T>(TypeTag<T>) {
    const T* xp = static_cast<const T*>(x.raw_data());
    geo.ForEachBlock(bits, [&](int64_t b) {
      const int64_t start = geo.Start(b);
      // The block's largest magnitude, as bits (non-negative floats order as
      // their bits, and a NaN's lie above infinity's, so a NaN in the block
      // wins), in 8 lanes: one running maximum would be a chain of dependent
      // instructions, and a float comparison keeps GCC from vectorizing.
      constexpr int kLanes = 8;
      uint32_t lanes[kLanes] = {};
      for (int64_t r = 0; r < geo.rows; ++r) {
        const T* p = xp + start + r * geo.matrix_cols;
        int64_t k = 0;
        for (; k + kLanes <= geo.cols; k += kLanes) {
          for (int j = 0; j < kLanes; ++j) {
            const uint32_t m = FloatBits(Convert<float>(p[k + j])) & 0x7FFFFFFFu;
            lanes[j] = m > lanes[j] ? m : lanes[j];
          }
        }
        for (; k < geo.cols; ++k) lanes[0] = std::max(lanes[0], FloatBits(Convert<float>(p[k])) & 0x7FFFFFFFu);
      }
      uint32_t top = 0;
      for (uint32_t m : lanes) top = std::max(top, m);
      const float amax = top > 0x7F800000u ? NAN : BitsToFloat(top);
      uint32_t stored;
      const float s = BlockScaleOf(scale_format, element, amax, g, &stored);
      if (scale_format == nullptr) {
        static_cast<float*>(sp)[b] = s;
      } else {
        static_cast<uint8_t*>(sp)[b] = static_cast<uint8_t>(stored);
      }
      // x / s (0 for a zero scale), encoded a chunk at a time (Note [Encoding
      // runs] in core/minifloat.h).
      constexpr int64_t kChunk = 256;
      float values[kChunk];
      uint8_t codes[kChunk];
      for (int64_t r = 0; r < geo.rows; ++r) {
        const int64_t row = start + r * geo.matrix_cols;
        for (int64_t k0 = 0; k0 < geo.cols; k0 += kChunk) {
          const int64_t n = std::min(kChunk, geo.cols - k0);
          const T* p = xp + row + k0;
          if (s == 0) {
            std::fill_n(values, n, 0.0f);
          } else {
            for (int64_t k = 0; k < n; ++k) values[k] = Convert<float>(p[k]) / s;
          }
          if (bits == 8) {  // one byte a code: encoded in place
            EncodeMiniFloatRun(element, values, n, cp + row + k0);
            continue;
          }
          EncodeMiniFloatRun(element, values, n, codes);
          for (int64_t k = 0; k < n; ++k) StoreMiniFloatCode(bits, cp, row + k0 + k, codes[k]);
        }
      }
    });
  });
}

void BlockDequantizeKernel(const KernelCall& c) {
  const Tensor &codes = c.in[0], &scales = c.in[1];
  const float g = *static_cast<const float*>(c.in[2].raw_data());
  const Tensor& y = c.out[0];
  const BlockGeometry geo(c, codes);
  const MiniFloatFormat& element = MiniFloatOf(codes.dtype());
  const MiniFloatFormat* scale_format = ScaleFormat(scales.dtype());
  const int bits = Info(codes.dtype()).bits;
  const auto* cp = static_cast<const uint8_t*>(codes.raw_data());
  const void* sp = scales.raw_data();
  // Every code's value once (at most 256): the loop below reads a table.
  float decoded[256];
  for (uint32_t code = 0; code < (1u << bits); ++code) decoded[code] = DecodeMiniFloat(element, code);
  VisitPlain(c, y.dtype(), [&]<typename T>(TypeTag<T>) {
    T* yp = static_cast<T*>(y.raw_data());
    geo.ForEachBlock(8, [&](int64_t b) {  // y is at least a byte an element
      const uint32_t stored = scale_format == nullptr ? FloatBits(static_cast<const float*>(sp)[b])
                                                      : static_cast<const uint8_t*>(sp)[b];
      const float s = DecodeBlockScale(scale_format, stored, g);
      const int64_t start = geo.Start(b);
      for (int64_t r = 0; r < geo.rows; ++r) {
        const int64_t row = start + r * geo.matrix_cols;
        if (bits == 8) {
          for (int64_t k = 0; k < geo.cols; ++k) yp[row + k] = Convert<T>(decoded[cp[row + k]] * s);
        } else {
          for (int64_t k = 0; k < geo.cols; ++k) yp[row + k] = Convert<T>(decoded[LoadMiniFloatCode(bits, cp, row + k)] * s);
        }
      }
    });
  });
}

}  // namespace

void AddQuantizationKernels(KernelTable& t) {
  t[static_cast<int>(Op::kBlockQuantize)] = &BlockQuantizeKernel;
  t[static_cast<int>(Op::kBlockDequantize)] = &BlockDequantizeKernel;
  t[static_cast<int>(Op::kQuantize)] = &QuantizeKernel;
  t[static_cast<int>(Op::kDequantize)] = &DequantizeKernel;
  t[static_cast<int>(Op::kFakeQuantize)] = &FakeQuantizeKernel;
  t[static_cast<int>(Op::kFakeQuantizeBackward)] = &FakeQuantizeBackwardKernel;
}

size_t QuantizeGeneralLoops() { return general_loops.load(std::memory_order_relaxed); }

}  // namespace quanta::cpu
