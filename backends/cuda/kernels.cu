// Elementwise, random, reduction and quantization kernels of the CUDA backend:
// one template per op family over storage types, the per-element math from
// core/scalar_ops.h (the CPU backend's too). Floating sums accumulate in f64 and
// integer sums in i64, as the CPU reference does. Not here: pooling, indexing,
// convolution and the integer GEMM pieces (nn_kernels.cu).
#include "backends/cuda/device_util.cuh"
#include "core/generator.h"
#include "core/scalar_ops.h"

namespace quanta::cuda {
namespace {

// ---- elementwise ----------------------------------------------------------------

template <typename Fn, typename T>
__global__ void UnaryLoop(Geometry g, Operand y, Operand x) {
  QUANTA_GRID_LOOP(i, g.numel) {
    auto v = Convert<Compute<T>>(LoadAs<T>(x, At(x, g, i)));
    static_cast<T*>(y.base)[At(y, g, i)] = Convert<T>(Fn{}(v));
  }
}

template <typename Fn, typename T>
__global__ void BinaryLoop(Geometry g, Operand y, Operand a, Operand b) {
  QUANTA_GRID_LOOP(i, g.numel) {
    auto r = Fn{}(Convert<Compute<T>>(LoadAs<T>(a, At(a, g, i))), Convert<Compute<T>>(LoadAs<T>(b, At(b, g, i))));
    if constexpr (std::is_same_v<decltype(r), bool>) {
      static_cast<bool*>(y.base)[At(y, g, i)] = r;
    } else {
      static_cast<T*>(y.base)[At(y, g, i)] = Convert<T>(r);
    }
  }
}

template <typename T>
__global__ void WhereLoop(Geometry g, Operand y, Operand cond, Operand a, Operand b) {
  QUANTA_GRID_LOOP(i, g.numel) {
    static_cast<T*>(y.base)[At(y, g, i)] =
        LoadAs<bool>(cond, At(cond, g, i)) ? LoadAs<T>(a, At(a, g, i)) : LoadAs<T>(b, At(b, g, i));
  }
}

// Loads element `index` of a storage of type S as its value type.
template <typename S>
__device__ inline auto LoadValue(const Operand& o, int64_t index) {
  if constexpr (std::is_same_v<S, QInt4x2>) {
    return LoadQInt4(static_cast<const uint8_t*>(o.base), index);
  } else {
    return LoadAs<S>(o, index);
  }
}

template <typename S, typename D>
__global__ void CopyLoop(Geometry g, Operand y, Operand x) {
  QUANTA_GRID_LOOP(i, g.numel) {
    static_cast<D*>(y.base)[At(y, g, i)] = Convert<D>(LoadValue<S>(x, At(x, g, i)));
  }
}

// A contiguous qint4 destination: thread b writes byte b (elements 2b, 2b+1).
template <typename S>
__global__ void CopyToQInt4(Geometry g, Operand y, Operand x) {
  int64_t bytes = (g.numel + 1) / 2;
  uint8_t* out = static_cast<uint8_t*>(y.base) + y.offset / 2;
  QUANTA_GRID_LOOP(b, bytes) {
    int8_t lo = Convert<int8_t>(LoadValue<S>(x, At(x, g, 2 * b)));
    int8_t hi = 2 * b + 1 < g.numel ? Convert<int8_t>(LoadValue<S>(x, At(x, g, 2 * b + 1))) : int8_t{0};
    out[b] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
  }
}

template <typename T>
__global__ void FillLoop(Geometry g, Operand y, T value) {
  QUANTA_GRID_LOOP(i, g.numel) { static_cast<T*>(y.base)[At(y, g, i)] = value; }
}

template <typename T>
__global__ void ArangeLoop(int64_t n, Operand y, int64_t stride, double start, double step) {
  QUANTA_GRID_LOOP(i, n) {
    static_cast<T*>(y.base)[y.offset + i * stride] = Convert<T>(start + step * static_cast<double>(i));
  }
}

// kind: 0 uniform(a, b), 1 normal(a, b), 2 bernoulli(a).
template <typename T, int kKind>
__global__ void RandomLoop(int64_t n, T* y, uint64_t seed, uint64_t offset, double a, double b) {
  QUANTA_GRID_LOOP(i, n) {
    double v;
    if constexpr (kKind == 0) v = a + (b - a) * PhiloxUniform(seed, offset + i);
    if constexpr (kKind == 1) v = a + b * PhiloxNormal(seed, offset + i);
    if constexpr (kKind == 2) v = PhiloxUniform(seed, offset + i) < a ? 1.0 : 0.0;
    y[i] = Convert<T>(v);
  }
}

// ---- reductions -------------------------------------------------------------------

// kKind: 0 sum, 1 max, 2 min, 3 argmax. Max/min propagate NaN (torch.max);
// argmax takes the first maximum, or the first NaN.
template <int kKind>
struct Reducer {
  double value = 0;
  int64_t int_sum = 0, index = -1;

  template <typename C>
  __device__ void Add(C v, int64_t i) {
    if constexpr (kKind == 0) {
      if constexpr (std::is_floating_point_v<C>) value += v; else int_sum += v;
    } else {
      Take(static_cast<double>(v), i);
    }
  }
  __device__ void Take(double d, int64_t i) {
    if (index < 0) {
      value = d, index = i;
      return;
    }
    bool nan_now = value != value, nan_new = d != d;
    if (kKind == 3) {
      if (!nan_now && (nan_new || d > value || (d == value && i < index))) value = d, index = i;
      else if (nan_now && nan_new && i < index) index = i;
    } else {
      if (nan_now) return;
      if (nan_new || (kKind == 1 ? d > value : d < value)) value = d, index = i;
    }
  }
  __device__ void Merge(const Reducer& o) {
    if constexpr (kKind == 0) {
      value += o.value, int_sum += o.int_sum;
    } else if (o.index >= 0) {
      Take(o.value, o.index);
    }
  }
  template <typename Out>
  __device__ Out Result() const {
    if constexpr (kKind == 0) {
      if constexpr (std::is_floating_point_v<Compute<Out>>) return Convert<Out>(value);
      else return Convert<Out>(int_sum);
    } else if constexpr (kKind == 3) {
      return Convert<Out>(index);
    } else {
      return Convert<Out>(value);
    }
  }
};

// One block per output element: threads stride over the reduced elements, then
// a shared-memory tree.
template <int kKind, typename T, typename Out>
__global__ void ReduceBlocks(Geometry out, Operand y, Operand x_outer, Geometry inner, Operand x_inner) {
  __shared__ Reducer<kKind> partial[kThreads];
  for (int64_t o = blockIdx.x; o < out.numel; o += gridDim.x) {
    int64_t base = At(x_outer, out, o);
    Reducer<kKind> r;
    for (int64_t i = threadIdx.x; i < inner.numel; i += blockDim.x) {
      r.Add(Convert<Compute<T>>(LoadAs<T>(x_outer, base + At(x_inner, inner, i))), i);
    }
    partial[threadIdx.x] = r;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {
      if (threadIdx.x < half) partial[threadIdx.x].Merge(partial[threadIdx.x + half]);
      __syncthreads();
    }
    if (threadIdx.x == 0) static_cast<Out*>(y.base)[At(y, out, o)] = partial[0].template Result<Out>();
    __syncthreads();
  }
}

// One thread per output element, for short reductions.
template <int kKind, typename T, typename Out>
__global__ void ReduceThreads(Geometry out, Operand y, Operand x_outer, Geometry inner, Operand x_inner) {
  QUANTA_GRID_LOOP(o, out.numel) {
    int64_t base = At(x_outer, out, o);
    Reducer<kKind> r;
    for (int64_t i = 0; i < inner.numel; ++i) {
      r.Add(Convert<Compute<T>>(LoadAs<T>(x_outer, base + At(x_inner, inner, i))), i);
    }
    static_cast<Out*>(y.base)[At(y, out, o)] = r.template Result<Out>();
  }
}

// ---- quantization (Note [One quantization formula]) ---------------------------------

template <typename T, typename Q>
__global__ void QuantizeLoop(Geometry g, Operand q, Operand x, Operand scale, Operand zp, double qmin, double qmax) {
  using C = Compute<T>;
  QUANTA_GRID_LOOP(i, g.numel) {
    C v = QuantizeValue<C>(Convert<C>(LoadAs<T>(x, At(x, g, i))), static_cast<C>(LoadAs<double>(scale, At(scale, g, i))),
                           static_cast<C>(LoadAs<double>(zp, At(zp, g, i))), static_cast<C>(qmin), static_cast<C>(qmax));
    static_cast<Q*>(q.base)[At(q, g, i)] = Convert<Q>(v);
  }
}

// A contiguous qint4 output: thread b writes byte b.
template <typename T>
__global__ void QuantizeToQInt4(Geometry g, Operand q, Operand x, Operand scale, Operand zp, double qmin, double qmax) {
  using C = Compute<T>;
  int64_t bytes = (g.numel + 1) / 2;
  uint8_t* out = static_cast<uint8_t*>(q.base) + q.offset / 2;
  QUANTA_GRID_LOOP(b, bytes) {
    int8_t v[2] = {0, 0};
    for (int k = 0; k < 2 && 2 * b + k < g.numel; ++k) {
      int64_t i = 2 * b + k;
      v[k] = static_cast<int8_t>(QuantizeValue<C>(
          Convert<C>(LoadAs<T>(x, At(x, g, i))), static_cast<C>(LoadAs<double>(scale, At(scale, g, i))),
          static_cast<C>(LoadAs<double>(zp, At(zp, g, i))), static_cast<C>(qmin), static_cast<C>(qmax)));
    }
    out[b] = static_cast<uint8_t>((v[0] & 0xF) | ((v[1] & 0xF) << 4));
  }
}

template <typename Q, typename T>
__global__ void DequantizeLoop(Geometry g, Operand x, Operand q, Operand scale, Operand zp) {
  using C = Compute<T>;
  QUANTA_GRID_LOOP(i, g.numel) {
    C v = DequantizeValue<C>(Convert<C>(LoadValue<Q>(q, At(q, g, i))), static_cast<C>(LoadAs<double>(scale, At(scale, g, i))),
                             static_cast<C>(LoadAs<double>(zp, At(zp, g, i))));
    static_cast<T*>(x.base)[At(x, g, i)] = Convert<T>(v);
  }
}

template <typename T>
__global__ void FakeQuantizeLoop(Geometry g, Operand y, Operand x, Operand scale, Operand zp, double qmin, double qmax) {
  using C = Compute<T>;
  QUANTA_GRID_LOOP(i, g.numel) {
    C s = Convert<C>(LoadAs<T>(scale, At(scale, g, i))), z = Convert<C>(LoadAs<T>(zp, At(zp, g, i)));
    C q = QuantizeValue<C>(Convert<C>(LoadAs<T>(x, At(x, g, i))), s, z, static_cast<C>(qmin), static_cast<C>(qmax));
    static_cast<T*>(y.base)[At(y, g, i)] = Convert<T>(DequantizeValue<C>(q, s, z));
  }
}

template <typename T, bool kEwgs>
__global__ void FakeQuantizeBackwardLoop(Geometry g, Operand gx, Operand gs, Operand gz, Operand grad, Operand x,
                                         Operand scale, Operand zp, double qmin, double qmax, double delta,
                                         double grad_scale) {
  using C = Compute<T>;
  QUANTA_GRID_LOOP(i, g.numel) {
    FakeQuantGrads<C> r = FakeQuantizeGradients<C, kEwgs>(
        Convert<C>(LoadAs<T>(grad, At(grad, g, i))), Convert<C>(LoadAs<T>(x, At(x, g, i))),
        Convert<C>(LoadAs<T>(scale, At(scale, g, i))), Convert<C>(LoadAs<T>(zp, At(zp, g, i))), static_cast<C>(qmin),
        static_cast<C>(qmax), static_cast<C>(delta));
    // A null base: a gradient not asked for (FakeQuantizeBackward's `needed`).
    if (gx.base) static_cast<T*>(gx.base)[At(gx, g, i)] = Convert<T>(r.x);
    if (gs.base) static_cast<T*>(gs.base)[At(gs, g, i)] = Convert<T>(r.scale * static_cast<C>(grad_scale));
    if (gz.base) static_cast<T*>(gz.base)[At(gz, g, i)] = Convert<T>(r.zero_point);
  }
}

}  // namespace

// ---- launchers ------------------------------------------------------------------------

std::string LaunchUnary(Op op, const Geometry& g, const Operand& y, const Operand& x, Stream s) {
  if (g.numel == 0) return "";
  return VisitPlain(x.dtype, [&]<typename T>(TypeTag<T>) -> std::string {
    switch (op) {
#define QUANTA_CUDA_UNARY(Name, str)                                                        \
  case Op::k##Name:                                                                         \
    if constexpr (kFloating<T> || std::is_same_v<Name##Fn, NegFn> || std::is_same_v<Name##Fn, AbsFn> || \
                  std::is_same_v<Name##Fn, ReluFn>) {                                       \
      UnaryLoop<Name##Fn, T><<<Blocks(g.numel), kThreads, 0, AsStream(s)>>>(g, y, x);       \
      return LastError();                                                                   \
    }                                                                                       \
    return std::string(str) + " of an integer dtype is not implemented on cuda";
      QUANTA_UNARY_OPS(QUANTA_CUDA_UNARY)
#undef QUANTA_CUDA_UNARY
      default: return "not a unary op";
    }
  });
}

std::string LaunchBinary(Op op, const Geometry& g, const Operand& y, const Operand& a, const Operand& b, Stream s) {
  if (g.numel == 0) return "";
  return VisitPlain(a.dtype, [&]<typename T>(TypeTag<T>) -> std::string {
    switch (op) {
#define QUANTA_CUDA_BINARY(Name, str)                                                         \
  case Op::k##Name:                                                                           \
    if constexpr (kFloating<T> || !std::is_same_v<Name##Fn, PowFn>) {                         \
      BinaryLoop<Name##Fn, T><<<Blocks(g.numel), kThreads, 0, AsStream(s)>>>(g, y, a, b);     \
      return LastError();                                                                     \
    }                                                                                         \
    return std::string(str) + " of an integer dtype is not implemented on cuda";
      QUANTA_BINARY_OPS(QUANTA_CUDA_BINARY)
      QUANTA_COMPARE_OPS(QUANTA_CUDA_BINARY)
#undef QUANTA_CUDA_BINARY
      default: return "not a binary op";
    }
  });
}

std::string LaunchWhere(const Geometry& g, const Operand& y, const Operand& cond, const Operand& a, const Operand& b,
                        Stream s) {
  if (g.numel == 0) return "";
  return VisitPlain(a.dtype, [&]<typename T>(TypeTag<T>) {
    WhereLoop<T><<<Blocks(g.numel), kThreads, 0, AsStream(s)>>>(g, y, cond, a, b);
    return LastError();
  });
}

std::string LaunchCopy(const Geometry& g, const Operand& y, const Operand& x, Stream s) {
  if (g.numel == 0) return "";
  std::string err;
  VisitDType(x.dtype, [&]<typename S>(TypeTag<S>) {
    VisitDType(y.dtype, [&]<typename D>(TypeTag<D>) {
      if constexpr (std::is_same_v<D, QInt4x2>) {
        if (!y.contiguous || y.offset % 2 != 0) {
          err = "a qint4 destination must be contiguous at an even offset";
          return;
        }
        CopyToQInt4<S><<<Blocks((g.numel + 1) / 2), kThreads, 0, AsStream(s)>>>(g, y, x);
      } else {
        CopyLoop<S, D><<<Blocks(g.numel), kThreads, 0, AsStream(s)>>>(g, y, x);
      }
      err = LastError();
    });
  });
  return err;
}

std::string LaunchFill(const Geometry& g, const Operand& y, double value, Stream s) {
  if (g.numel == 0) return "";
  return VisitPlain(y.dtype, [&]<typename T>(TypeTag<T>) {
    FillLoop<T><<<Blocks(g.numel), kThreads, 0, AsStream(s)>>>(g, y, Convert<T>(value));
    return LastError();
  });
}

std::string LaunchArange(int64_t n, const Operand& y, int64_t stride, double start, double step, Stream s) {
  if (n == 0) return "";
  return VisitPlain(y.dtype, [&]<typename T>(TypeTag<T>) {
    ArangeLoop<T><<<Blocks(n), kThreads, 0, AsStream(s)>>>(n, y, stride, start, step);
    return LastError();
  });
}

std::string LaunchRandom(Op op, int64_t n, const Operand& y, uint64_t seed, uint64_t offset, double a, double b,
                         Stream s) {
  if (n == 0) return "";
  return VisitPlain(y.dtype, [&]<typename T>(TypeTag<T>) -> std::string {
    T* out = static_cast<T*>(y.base) + y.offset;
    cudaStream_t st = AsStream(s);
    switch (op) {
      case Op::kUniform: RandomLoop<T, 0><<<Blocks(n), kThreads, 0, st>>>(n, out, seed, offset, a, b); break;
      case Op::kNormal: RandomLoop<T, 1><<<Blocks(n), kThreads, 0, st>>>(n, out, seed, offset, a, b); break;
      case Op::kBernoulli: RandomLoop<T, 2><<<Blocks(n), kThreads, 0, st>>>(n, out, seed, offset, a, b); break;
      default: return "not a random op";
    }
    return LastError();
  });
}

std::string LaunchReduce(Op op, const Geometry& out, const Operand& y, const Operand& x_outer, const Geometry& inner,
                         const Operand& x_inner, Stream s) {
  if (out.numel == 0) return "";
  int kind = op == Op::kSum ? 0 : op == Op::kMax ? 1 : op == Op::kMin ? 2 : 3;
  bool blocks = inner.numel >= 64 || out.numel < 1024;
  int grid = static_cast<int>(out.numel < 65535 * 4 ? out.numel : 65535 * 4);
  cudaStream_t st = AsStream(s);
  return VisitPlain(x_outer.dtype, [&]<typename T>(TypeTag<T>) {
    return VisitPlain(y.dtype, [&]<typename Out>(TypeTag<Out>) {
      auto run = [&]<int kKind>() {
        if (blocks) {
          ReduceBlocks<kKind, T, Out><<<grid, kThreads, 0, st>>>(out, y, x_outer, inner, x_inner);
        } else {
          ReduceThreads<kKind, T, Out><<<Blocks(out.numel), kThreads, 0, st>>>(out, y, x_outer, inner, x_inner);
        }
      };
      switch (kind) {
        case 0: run.template operator()<0>(); break;
        case 1: run.template operator()<1>(); break;
        case 2: run.template operator()<2>(); break;
        default: run.template operator()<3>(); break;
      }
      return LastError();
    });
  });
}

std::string LaunchQuantize(const Geometry& g, const Operand& q, const Operand& x, const Operand& scale,
                           const Operand& zero_point, double qmin, double qmax, Stream s) {
  if (g.numel == 0) return "";
  return VisitPlain(x.dtype, [&]<typename T>(TypeTag<T>) -> std::string {
    if constexpr (!kFloating<T>) {
      return "quantize needs a floating input";
    } else {
      std::string err;
      VisitDType(q.dtype, [&]<typename Q>(TypeTag<Q>) {
        if constexpr (std::is_same_v<Q, QInt4x2>) {
          if (!q.contiguous || q.offset % 2 != 0) {
            err = "a qint4 output must be contiguous at an even offset";
            return;
          }
          QuantizeToQInt4<T><<<Blocks((g.numel + 1) / 2), kThreads, 0, AsStream(s)>>>(g, q, x, scale, zero_point,
                                                                                     qmin, qmax);
        } else {
          QuantizeLoop<T, Q><<<Blocks(g.numel), kThreads, 0, AsStream(s)>>>(g, q, x, scale, zero_point, qmin, qmax);
        }
        err = LastError();
      });
      return err;
    }
  });
}

std::string LaunchDequantize(const Geometry& g, const Operand& x, const Operand& q, const Operand& scale,
                             const Operand& zero_point, Stream s) {
  if (g.numel == 0) return "";
  std::string err;
  VisitDType(q.dtype, [&]<typename Q>(TypeTag<Q>) {
    err = VisitPlain(x.dtype, [&]<typename T>(TypeTag<T>) -> std::string {
      if constexpr (!kFloating<T>) {
        return "dequantize needs a floating output";
      } else {
        DequantizeLoop<Q, T><<<Blocks(g.numel), kThreads, 0, AsStream(s)>>>(g, x, q, scale, zero_point);
        return LastError();
      }
    });
  });
  return err;
}

std::string LaunchFakeQuantize(const Geometry& g, const Operand& y, const Operand& x, const Operand& scale,
                               const Operand& zero_point, double qmin, double qmax, Stream s) {
  if (g.numel == 0) return "";
  return VisitPlain(x.dtype, [&]<typename T>(TypeTag<T>) -> std::string {
    if constexpr (!kFloating<T>) {
      return "fake_quantize needs a floating input";
    } else {
      FakeQuantizeLoop<T><<<Blocks(g.numel), kThreads, 0, AsStream(s)>>>(g, y, x, scale, zero_point, qmin, qmax);
      return LastError();
    }
  });
}

std::string LaunchFakeQuantizeBackward(const Geometry& g, const Operand& grad_x, const Operand& grad_scale,
                                       const Operand& grad_zero_point, const Operand& grad, const Operand& x,
                                       const Operand& scale, const Operand& zero_point, double qmin, double qmax,
                                       bool ewgs, double ewgs_delta, double lsq_grad_scale, Stream s) {
  if (g.numel == 0) return "";
  return VisitPlain(x.dtype, [&]<typename T>(TypeTag<T>) -> std::string {
    if constexpr (!kFloating<T>) {
      return "fake_quantize_backward needs a floating input";
    } else {
      cudaStream_t st = AsStream(s);
      if (ewgs) {
        FakeQuantizeBackwardLoop<T, true><<<Blocks(g.numel), kThreads, 0, st>>>(
            g, grad_x, grad_scale, grad_zero_point, grad, x, scale, zero_point, qmin, qmax, ewgs_delta, lsq_grad_scale);
      } else {
        FakeQuantizeBackwardLoop<T, false><<<Blocks(g.numel), kThreads, 0, st>>>(
            g, grad_x, grad_scale, grad_zero_point, grad, x, scale, zero_point, qmin, qmax, ewgs_delta, lsq_grad_scale);
      }
      return LastError();
    }
  });
}

}  // namespace quanta::cuda
