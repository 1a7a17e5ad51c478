// Reference kernels: where, copy (with casts), fill, arange and the random fills.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "backends/cpu/reference_common.h"
#include "core/minifloat.h"

namespace quanta::cpu {
namespace {

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

// Copy to, from or between minifloats (Note [Storage-only dtypes]): every
// element through f32 with core/minifloat.h's conversions (round to nearest
// even, saturating). Sub-byte outputs (f4, f6) are written by one thread.
void CopyMiniFloatKernel(const KernelCall& c) {
  const Tensor& x = c.in[0];
  const Tensor& y = c.out[0];
  const auto* xp = static_cast<const uint8_t*>(StorageBase(x));
  auto* yp = static_cast<uint8_t*>(StorageBase(y));
  const int x_bits = Info(x.dtype()).bits, y_bits = Info(y.dtype()).bits;
  const bool serial = y_bits < 8;
  if (IsMiniFloat(x.dtype()) && IsMiniFloat(y.dtype())) {
    const MiniFloatFormat &from = MiniFloatOf(x.dtype()), &to = MiniFloatOf(y.dtype());
    ForEachStrided<2>(
        y.shape(), {&y, &x},
        [&](const std::array<int64_t, 2>& o) {
          float v = DecodeMiniFloat(from, LoadMiniFloatCode(x_bits, xp, o[1]));
          StoreMiniFloatCode(y_bits, yp, o[0], EncodeMiniFloat(to, v));
        },
        32768, serial);
  } else if (IsMiniFloat(x.dtype())) {
    const MiniFloatFormat& from = MiniFloatOf(x.dtype());
    VisitPlain(c, y.dtype(), [&]<typename D>(TypeTag<D>) {
      ForEachStrided<2>(y.shape(), {&y, &x}, [&](const std::array<int64_t, 2>& o) {
        StoreAt<D>(yp, o[0], Convert<D>(DecodeMiniFloat(from, LoadMiniFloatCode(x_bits, xp, o[1]))));
      });
    });
  } else {
    const MiniFloatFormat& to = MiniFloatOf(y.dtype());
    VisitPlain(c, x.dtype(), [&]<typename S>(TypeTag<S>) {
      ForEachStrided<2>(
          y.shape(), {&y, &x},
          [&](const std::array<int64_t, 2>& o) {
            StoreMiniFloatCode(y_bits, yp, o[0], EncodeMiniFloat(to, Convert<float>(LoadAt<S>(xp, o[1]))));
          },
          32768, serial);
    });
  }
}

// One run of a same-dtype copy: element j from from[j * from_stride] to
// to[j * to_stride], T a whole-byte type of the element's size.
template <typename T>
void CopyRun(char* to, const char* from, int64_t n, int64_t to_stride, int64_t from_stride) {
  T* t = reinterpret_cast<T*>(to);
  const T* f = reinterpret_cast<const T*>(from);
  if (from_stride == 0) {
    const T v = f[0];
    for (int64_t j = 0; j < n; ++j) t[j * to_stride] = v;
  } else {
    for (int64_t j = 0; j < n; ++j) t[j * to_stride] = f[j * from_stride];
  }
}

// Copy with cast. Quantized dtypes copy their integer values (to the same
// quantized dtype, or to a plain integer dtype for IntRepr).
void CopyKernel(const KernelCall& c) {
  const Tensor& x = c.in[0];
  const Tensor& y = c.out[0];
  if (x.dtype() == y.dtype() && x.is_contiguous() && y.is_contiguous() && Info(x.dtype()).bits >= 8) {
    std::memcpy(y.raw_data(), x.raw_data(), StorageBytes(x.dtype(), x.numel()));
    return;
  }
  // Note [Copy runs]: a strided copy to the same dtype moves bits, a run at a
  // time: a run dense on both sides by memcpy, a broadcast one as a fill, any
  // other as a loop over the element's bytes as one integer. Element by element
  // through ForEachStrided it took 7% of an int8 ResNet-20's time for one
  // 16-channel-run copy (a quantized shortcut, Note [Quantized shortcuts]).
  // The dims are visited in y's memory order, so that a channels-last y is
  // copied along its channels (in logical order, along W at a stride of C: a
  // ResNet option-A shortcut's gradient, Note [Channels-last slice gradients]).
  if (x.dtype() == y.dtype() && Info(x.dtype()).bits >= 8) {
    const int64_t size = Info(x.dtype()).bits / 8;
    const char* xp = static_cast<const char*>(StorageBase(x));
    char* yp = static_cast<char*>(StorageBase(y));
    ForEachRunStrided<2>(y.shape(), {&y, &x}, [&](const std::array<int64_t, 2>& off, int64_t n,
                                                  const std::array<int64_t, 2>& stride) {
      char* to = yp + off[0] * size;
      const char* from = xp + off[1] * size;
      if (stride[0] == 1 && stride[1] == 1) {
        std::memcpy(to, from, static_cast<size_t>(n * size));
        return;
      }
      switch (size) {
        case 1: CopyRun<uint8_t>(to, from, n, stride[0], stride[1]); break;
        case 2: CopyRun<uint16_t>(to, from, n, stride[0], stride[1]); break;
        case 4: CopyRun<uint32_t>(to, from, n, stride[0], stride[1]); break;
        default: CopyRun<uint64_t>(to, from, n, stride[0], stride[1]); break;
      }
    }, 32768, /*serial=*/false, /*memory_order=*/true);  // runs along y's innermost dim in memory: C, channels-last
    return;
  }
  if (IsMiniFloat(x.dtype()) || IsMiniFloat(y.dtype())) {
    CopyMiniFloatKernel(c);
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

}  // namespace

void AddElementwiseKernels(KernelTable& t) {
  t[static_cast<int>(Op::kWhere)] = &WhereKernel;
  t[static_cast<int>(Op::kCopy)] = &CopyKernel;
  t[static_cast<int>(Op::kFill)] = &FillKernel;
  t[static_cast<int>(Op::kArange)] = &ArangeKernel;
  t[static_cast<int>(Op::kUniform)] = &UniformKernel;
  t[static_cast<int>(Op::kNormal)] = &NormalKernel;
  t[static_cast<int>(Op::kBernoulli)] = &BernoulliKernel;
}

}  // namespace quanta::cpu
