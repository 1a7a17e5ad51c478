// Pooling, indexing, convolution-by-GEMM and integer-GEMM kernels of the CUDA
// backend: the loops around cuBLAS/cuBLASLt/cuDNN calls (which live in
// cuda_backend.cc). Each is the CPU reference kernel's loop with the outer loops
// spread over threads; gradients gather instead of scattering where they can
// (no atomics, deterministic), scatter_add uses atomics.
#include "backends/cuda/device_util.cuh"
#include "core/scalar_ops.h"

namespace quanta::cuda {
namespace {

// ---- pooling --------------------------------------------------------------------

template <typename T>
__global__ void MaxPoolLoop(PoolGeometry p, const T* x, T* y, int64_t* indices) {
  using C = Compute<T>;
  int64_t total = p.N * p.C * p.OH * p.OW;
  QUANTA_GRID_LOOP(i, total) {
    int64_t ow = i % p.OW, oh = (i / p.OW) % p.OH, c = (i / (p.OW * p.OH)) % p.C, n = i / (p.OW * p.OH * p.C);
    const T* plane = x + n * p.x_strides[0] + c * p.x_strides[1];
    C best{};
    int64_t best_index = -1;
    T best_value{};
    for (int64_t kh = 0; kh < p.kernel[0]; ++kh) {
      int64_t ih = oh * p.stride[0] - p.padding[0] + kh * p.dilation[0];
      if (ih < 0 || ih >= p.H) continue;
      for (int64_t kw = 0; kw < p.kernel[1]; ++kw) {
        int64_t iw = ow * p.stride[1] - p.padding[1] + kw * p.dilation[1];
        if (iw < 0 || iw >= p.W) continue;
        T raw = plane[ih * p.x_strides[2] + iw * p.x_strides[3]];
        C v = Convert<C>(raw);
        bool better = v > best;
        if constexpr (std::is_floating_point_v<C>) better = better || (v != v && best == best);
        if (best_index < 0 || better) best = v, best_index = ih * p.W + iw, best_value = raw;
      }
    }
    int64_t at = n * p.y_strides[0] + c * p.y_strides[1] + oh * p.y_strides[2] + ow * p.y_strides[3];
    y[at] = best_value;
    if (indices) indices[at] = best_index;  // null in inference
  }
}

// One thread per plane: zero it, then add each output's gradient at its argmax.
template <typename T>
__global__ void MaxPoolBackwardLoop(int64_t planes, int64_t ohw, int64_t hw, const T* grad_out, const int64_t* indices,
                                    T* grad_in) {
  using C = Compute<T>;
  QUANTA_GRID_LOOP(p, planes) {
    T* plane = grad_in + p * hw;
    for (int64_t i = 0; i < hw; ++i) plane[i] = Convert<T>(0.0);
    for (int64_t o = 0; o < ohw; ++o) {
      int64_t i = indices[p * ohw + o];
      if (i >= 0) plane[i] = Convert<T>(Convert<C>(plane[i]) + Convert<C>(grad_out[p * ohw + o]));
    }
  }
}

// ---- batch norm (training) ------------------------------------------------------------
// One block per channel: its threads stride over the channel's N * HW values,
// sums in f64 reduced through shared memory (in another order than the CPU's
// partial sums; both f64). Two passes for the mean and variance, one for y; the
// backward's two sums in one pass, then grad_x.

__device__ double BlockSum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int step = blockDim.x / 2; step > 0; step >>= 1) {
    if (threadIdx.x < step) shared[threadIdx.x] += shared[threadIdx.x + step];
    __syncthreads();
  }
  double total = shared[0];
  __syncthreads();  // shared is reused by the next sum
  return total;
}

__device__ inline int64_t ChannelIndex(int64_t i, int64_t C, int64_t HW, int64_t c) {
  return (i / HW * C + c) * HW + i % HW;
}

// The epilogue of core/scalar_ops.h (Note [Batch norm epilogue]) for flags
// known only at run time: residual r when non-null, then ReLU when relu.
template <typename T, typename K>
__device__ inline T BnEpilogueAt(K normalized, const T* r, bool relu, int64_t at) {
  if (r) return relu ? BnEpilogue<T, true, true>(normalized, r, at) : BnEpilogue<T, true, false>(normalized, r, at);
  return relu ? BnEpilogue<T, false, true>(normalized, r, at) : BnEpilogue<T, false, false>(normalized, r, at);
}

template <typename T, typename S>
__global__ void BatchNormLoop(int64_t N, int64_t C, int64_t HW, double eps, const T* x, const T* w, const T* b, T* y,
                              S* mean_out, S* var_out, const T* r, bool relu) {
  using K = Compute<T>;
  __shared__ double shared[kThreads];
  const int64_t c = blockIdx.x, count = N * HW;
  double sum = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) sum += double(Convert<K>(x[ChannelIndex(i, C, HW, c)]));
  const double mean = BlockSum(sum, shared) / double(count);
  double sq = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    double d = double(Convert<K>(x[ChannelIndex(i, C, HW, c)])) - mean;
    sq += d * d;
  }
  const S mean_s = S(mean), var_s = S(BlockSum(sq, shared) / double(count));
  if (threadIdx.x == 0) mean_out[c] = mean_s, var_out[c] = var_s;
  const BnAffine<K> f = BnAffineOf<K, S>(mean_s, var_s, Convert<K>(w[c]), Convert<K>(b[c]), eps);
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    int64_t at = ChannelIndex(i, C, HW, c);
    y[at] = BnEpilogueAt<T, K>(BnNormalize(Convert<K>(x[at]), f.m, f.scale, f.shift), r, relu, at);
  }
}

// Note [Fused layer norm] (backends/cpu/reference_normalization.cc): one block
// per row of D values, the mean and the variance about it in f64 through
// shared memory (two passes), then y. Softmax along the last dim likewise (max,
// then exp rounded to the dtype and summed, then divided); along an inner dim,
// a thread per (outer, inner) column.
template <typename T, typename S>
__global__ void LayerNormLoop(int64_t D, double eps, const T* x, const T* w, const T* b, T* y, S* mean_out,
                              S* rstd_out) {
  using K = Compute<T>;
  __shared__ double shared[kThreads];
  const int64_t r = blockIdx.x;
  const T* xr = x + r * D;
  T* yr = y + r * D;
  double sum = 0;
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) sum += double(Convert<K>(xr[j]));
  const double mean = BlockSum(sum, shared) / double(D);
  double sq = 0;
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
    double d = double(Convert<K>(xr[j])) - mean;
    sq += d * d;
  }
  const double rstd = 1 / sqrt(BlockSum(sq, shared) / double(D) + eps);
  if (threadIdx.x == 0) mean_out[r] = S(mean), rstd_out[r] = S(rstd);
  const K m = K(mean), sc = K(rstd);
  for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
    yr[j] = Convert<T>((Convert<K>(xr[j]) - m) * sc * Convert<K>(w[j]) + Convert<K>(b[j]));
  }
}

// The largest v over the block; a NaN is passed over, as std::max(m, NaN) does
// on the CPU (the NaN still makes its row NaN through exp and the sum).
__device__ double BlockMax(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int step = blockDim.x / 2; step > 0; step >>= 1) {
    if (threadIdx.x < step && shared[threadIdx.x] < shared[threadIdx.x + step]) {
      shared[threadIdx.x] = shared[threadIdx.x + step];
    }
    __syncthreads();
  }
  double total = shared[0];
  __syncthreads();
  return total;
}

template <typename T>
__global__ void SoftmaxRowLoop(int64_t n, const T* x, T* y) {
  using K = Compute<T>;
  __shared__ double shared[kThreads];
  const T* xr = x + blockIdx.x * n;
  T* yr = y + blockIdx.x * n;
  K m = -INFINITY;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    K v = Convert<K>(xr[j]);
    if (m < v) m = v;
  }
  m = K(BlockMax(double(m), shared));
  double sum = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    yr[j] = Convert<T>(ExpFn{}(Convert<K>(xr[j]) - m));
    sum += double(Convert<K>(yr[j]));
  }
  const K total = K(BlockSum(sum, shared));
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] = Convert<T>(Convert<K>(yr[j]) / total);
}

template <typename T>
__global__ void SoftmaxColumnLoop(int64_t outer, int64_t n, int64_t inner, const T* x, T* y) {
  using K = Compute<T>;
  const int64_t col = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (col >= outer * inner) return;
  const int64_t base = col / inner * n * inner + col % inner;
  K m = -INFINITY;
  for (int64_t i = 0; i < n; ++i) {
    K v = Convert<K>(x[base + i * inner]);
    if (m < v) m = v;
  }
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    y[base + i * inner] = Convert<T>(ExpFn{}(Convert<K>(x[base + i * inner]) - m));
    sum += double(Convert<K>(y[base + i * inner]));
  }
  for (int64_t i = 0; i < n; ++i) y[base + i * inner] = Convert<T>(Convert<K>(y[base + i * inner]) / K(sum));
}

template <typename T, typename S>
__global__ void BatchNormBackwardLoop(int64_t N, int64_t C, int64_t HW, double eps, const T* gy, const T* x,
                                      const T* w, const S* mean, const S* var, T* gx, T* gw, T* gb, const T* b,
                                      const T* r, T* gr) {
  using K = Compute<T>;
  __shared__ double shared[kThreads];
  const int64_t c = blockIdx.x, count = N * HW;
  const double mu = double(mean[c]), invstd = 1 / sqrt(double(var[c]) + eps);
  // With ReLU (b non-null): grad_y where the forward's value before ReLU was
  // positive, else 0, as ThresholdBackward.
  const BnAffine<K> f = BnAffineOf<K, S>(mean[c], var[c], Convert<K>(w[c]), b ? Convert<K>(b[c]) : K(0), eps);
  auto g = [&](int64_t at) -> K {
    const K gi = Convert<K>(gy[at]);
    if (!b) return gi;
    const K normalized = BnNormalize(Convert<K>(x[at]), f.m, f.scale, f.shift);
    return r ? BnMaskedGrad<T, true>(gi, normalized, r, at) : BnMaskedGrad<T, false>(gi, normalized, r, at);
  };
  double sum_gy = 0, sum_gy_xmu = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    int64_t at = ChannelIndex(i, C, HW, c);
    double gi = double(g(at));
    sum_gy += gi;
    sum_gy_xmu += gi * (double(Convert<K>(x[at])) - mu);
  }
  sum_gy = BlockSum(sum_gy, shared);
  sum_gy_xmu = BlockSum(sum_gy_xmu, shared);
  const double grad_w = sum_gy_xmu * invstd;
  if (threadIdx.x == 0) gb[c] = Convert<T>(K(sum_gy)), gw[c] = Convert<T>(K(grad_w));
  const double wi = double(Convert<K>(w[c])) * invstd;
  const K k1 = K(wi), k2 = K(-wi * invstd * grad_w / double(count)), k3 = K(-wi * sum_gy / double(count)), m = K(mu);
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    int64_t at = ChannelIndex(i, C, HW, c);
    const K gi = g(at);
    gx[at] = Convert<T>(k1 * gi + k2 * (Convert<K>(x[at]) - m) + k3);
    if (gr) gr[at] = Convert<T>(gi);
  }
}

// ---- indexing ---------------------------------------------------------------------
// ---- indexing ---------------------------------------------------------------------

template <typename T>
__global__ void GatherLoop(Geometry g, Operand y, Operand x_base, Operand index, int64_t dim_stride, int64_t dim_size,
                           int64_t* bad_index) {
  QUANTA_GRID_LOOP(i, g.numel) {
    int64_t k = LoadAs<int64_t>(index, At(index, g, i));
    if (k < 0 || k >= dim_size) {
      *bad_index = k;
      continue;
    }
    static_cast<T*>(y.base)[At(y, g, i)] = LoadAs<T>(x_base, At(x_base, g, i) + k * dim_stride);
  }
}

// atomicAdd for every accumulating storage type; 16-bit floats by compare-and-swap
// on their aligned 32-bit word.
template <typename T>
__device__ void AtomicAdd(T* p, Compute<T> v) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, int32_t>) {
    atomicAdd(p, v);
  } else if constexpr (std::is_same_v<T, int64_t>) {
    atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
  } else {
    static_assert(std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>);
    auto address = reinterpret_cast<uintptr_t>(p);
    unsigned int* word = reinterpret_cast<unsigned int*>(address & ~uintptr_t{3});
    bool high = (address & 2) != 0;
    unsigned int old = *word, assumed;
    do {
      assumed = old;
      T cur{static_cast<uint16_t>(high ? assumed >> 16 : assumed & 0xFFFF)};
      uint16_t sum = Convert<T>(Convert<float>(cur) + v).bits;
      unsigned int next = high ? (assumed & 0xFFFFu) | (unsigned(sum) << 16) : (assumed & 0xFFFF0000u) | sum;
      old = atomicCAS(word, assumed, next);
    } while (old != assumed);
  }
}

template <typename T>
inline constexpr bool kAtomic = std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, int32_t> ||
                                std::is_same_v<T, int64_t> || std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>;

template <typename T>
__global__ void ScatterAddLoop(Geometry g, Operand y_base, Operand src, Operand index, int64_t dim_stride,
                               int64_t dim_size, int64_t* bad_index) {
  QUANTA_GRID_LOOP(i, g.numel) {
    int64_t k = LoadAs<int64_t>(index, At(index, g, i));
    if (k < 0 || k >= dim_size) {
      *bad_index = k;
      continue;
    }
    AtomicAdd<T>(static_cast<T*>(y_base.base) + At(y_base, g, i) + k * dim_stride,
                 Convert<Compute<T>>(LoadAs<T>(src, At(src, g, i))));
  }
}

// ---- matmul loops (integer dtypes) -------------------------------------------------

template <typename T>
__global__ void MatmulLoop(int64_t batch, int64_t M, int64_t N, int64_t K, MatrixOperand a, MatrixOperand b, T* y) {
  using Acc = std::conditional_t<std::is_floating_point_v<Compute<T>>, double, int64_t>;
  const T* ap = static_cast<const T*>(a.base);
  const T* bp = static_cast<const T*>(b.base);
  QUANTA_GRID_LOOP(i, batch * M * N) {
    int64_t n = i % N, m = (i / N) % M, bi = i / (M * N);
    Acc acc = 0;
    for (int64_t k = 0; k < K; ++k) {
      acc += static_cast<Acc>(Convert<Compute<T>>(ap[a.offset + bi * a.batch_stride + m * a.row_stride + k * a.col_stride])) *
             static_cast<Acc>(Convert<Compute<T>>(bp[b.offset + bi * b.batch_stride + k * b.row_stride + n * b.col_stride]));
    }
    y[i] = Convert<T>(acc);
  }
}

// ---- convolution by GEMM -------------------------------------------------------------

// col (count, CG*KH*KW, OH*OW) for group g.
template <typename T>
__global__ void Im2colLoop(ConvGeometry c, const T* x, int64_t n0, int64_t count, int64_t g, T* col) {
  int64_t KK = c.KH * c.KW, rows = c.CG * KK, pixels = c.OH * c.OW;
  QUANTA_GRID_LOOP(i, count * rows * pixels) {
    int64_t p = i % pixels, r = (i / pixels) % rows, n = n0 + i / (pixels * rows);
    int64_t cg = r / KK, kh = (r / c.KW) % c.KH, kw = r % c.KW, oh = p / c.OW, ow = p % c.OW;
    int64_t ih = oh * c.stride[0] - c.padding[0] + kh * c.dilation[0];
    int64_t iw = ow * c.stride[1] - c.padding[1] + kw * c.dilation[1];
    bool inside = ih >= 0 && ih < c.H && iw >= 0 && iw < c.W;
    col[i] = inside ? x[n * c.x_strides[0] + (g * c.CG + cg) * c.x_strides[1] + ih * c.x_strides[2] + iw * c.x_strides[3]]
                    : Convert<T>(0.0);
  }
}

// grad_x (N, C, H, W) contiguous, group g's channels of images [n0, n0+count).
template <typename T>
__global__ void Col2imLoop(ConvGeometry c, const T* col, int64_t n0, int64_t count, int64_t g, T* grad_x) {
  using C = Compute<T>;
  int64_t KK = c.KH * c.KW, rows = c.CG * KK, pixels = c.OH * c.OW;
  QUANTA_GRID_LOOP(i, count * c.CG * c.H * c.W) {
    int64_t iw = i % c.W, ih = (i / c.W) % c.H, cg = (i / (c.W * c.H)) % c.CG, nr = i / (c.W * c.H * c.CG);
    double acc = 0;
    for (int64_t kh = 0; kh < c.KH; ++kh) {
      int64_t th = ih + c.padding[0] - kh * c.dilation[0];
      if (th < 0 || th % c.stride[0] != 0 || th / c.stride[0] >= c.OH) continue;
      for (int64_t kw = 0; kw < c.KW; ++kw) {
        int64_t tw = iw + c.padding[1] - kw * c.dilation[1];
        if (tw < 0 || tw % c.stride[1] != 0 || tw / c.stride[1] >= c.OW) continue;
        int64_t r = (cg * c.KH + kh) * c.KW + kw, p = (th / c.stride[0]) * c.OW + tw / c.stride[1];
        acc += static_cast<double>(Convert<C>(col[(nr * rows + r) * pixels + p]));
      }
    }
    grad_x[(((n0 + nr) * c.C + g * c.CG + cg) * c.H + ih) * c.W + iw] = Convert<T>(acc);
  }
}

// ---- integer GEMM pieces ---------------------------------------------------------------

// The signed value of a quantized int8/uint8 element: uint8 shifted by -128.
template <typename Q>
__device__ inline int8_t Signed(Q v) {
  if constexpr (std::is_same_v<Q, uint8_t>) return static_cast<int8_t>(static_cast<int>(v) - 128);
  else return static_cast<int8_t>(v);
}

template <typename Q>
__global__ void PackRowsLoop(const Q* a, int64_t M, int64_t K, int8_t* packed) {
  int64_t Mp = PadTo(M, 4), Kp = PadTo(K, 16);
  QUANTA_GRID_LOOP(i, Mp * Kp) {
    int64_t m = i / Kp, k = i % Kp;
    packed[i] = m < M && k < K ? Signed(a[m * K + k]) : int8_t{0};
  }
}

// Element e of a qint8 or qint4 weight storage.
__device__ inline int8_t WeightAt(const void* w, bool qint4, int64_t e) {
  return qint4 ? LoadQInt4(static_cast<const uint8_t*>(w), e) : static_cast<const int8_t*>(w)[e];
}

__global__ void PackColumnsLoop(const void* b, bool qint4, int64_t offset, int64_t K, int64_t N, int8_t* packed) {
  int64_t Np = PadTo(N, 4), Kp = PadTo(K, 16);
  QUANTA_GRID_LOOP(i, Np * Kp) {
    int64_t n = i / Kp, k = i % Kp;
    packed[i] = n < N && k < K ? WeightAt(b, qint4, offset + k * N + n) : int8_t{0};
  }
}

template <typename Q>
__global__ void Im2colInt8Loop(ConvGeometry c, const Q* x, int8_t zero_point, int64_t n0, int64_t count, int64_t g,
                               int8_t* packed) {
  int64_t KK = c.KH * c.KW, K = c.CG * KK, Kp = PadTo(K, 16), pixels = c.OH * c.OW;
  int64_t rows = count * pixels, rows_p = PadTo(rows, 4);
  QUANTA_GRID_LOOP(i, rows_p * Kp) {
    int64_t m = i / Kp, r = i % Kp;
    if (m >= rows || r >= K) {
      packed[i] = 0;
      continue;
    }
    int64_t n = n0 + m / pixels, p = m % pixels, oh = p / c.OW, ow = p % c.OW;
    int64_t cg = r / KK, kh = (r / c.KW) % c.KH, kw = r % c.KW;
    int64_t ih = oh * c.stride[0] - c.padding[0] + kh * c.dilation[0];
    int64_t iw = ow * c.stride[1] - c.padding[1] + kw * c.dilation[1];
    bool inside = ih >= 0 && ih < c.H && iw >= 0 && iw < c.W;
    packed[i] = inside ? Signed(x[n * c.x_strides[0] + (g * c.CG + cg) * c.x_strides[1] + ih * c.x_strides[2] +
                                  iw * c.x_strides[3]])
                       : zero_point;
  }
}

__global__ void PackConvWeightsLoop(ConvGeometry c, const void* w, bool qint4, int64_t offset, int64_t g, int8_t* packed) {
  int64_t K = c.CG * c.KH * c.KW, Kp = PadTo(K, 16), OG = c.O / c.G, rows_p = PadTo(OG, 4);
  QUANTA_GRID_LOOP(i, rows_p * Kp) {
    int64_t o = i / Kp, r = i % Kp;
    packed[i] = o < OG && r < K ? WeightAt(w, qint4, offset + (g * OG + o) * K + r) : int8_t{0};
  }
}

__global__ void RowSumsLoop(const int8_t* packed, int64_t rows, int64_t Kp, int32_t* sums) {
  QUANTA_GRID_LOOP(m, rows) {
    int32_t s = 0;
    for (int64_t k = 0; k < Kp; ++k) s += packed[m * Kp + k];
    sums[m] = s;
  }
}

__global__ void Int8GemmLoop(const int8_t* a, const int8_t* bt, int64_t M, int64_t N, int64_t ldk, int32_t* acc,
                             int64_t ldc) {
  QUANTA_GRID_LOOP(i, M * N) {
    int64_t m = i / N, n = i % N;
    int32_t s = 0;
    for (int64_t k = 0; k < ldk; ++k) s += int32_t{a[m * ldk + k]} * int32_t{bt[n * ldk + k]};
    acc[m * ldc + n] = s;
  }
}

__global__ void EpilogueLoop(Epilogue e) {
  QUANTA_GRID_LOOP(i, e.rows * e.cols) {
    int64_t m = i / e.cols, n = i % e.cols;
    int64_t image = e.first_image + m / e.pixels, p = m % e.pixels, ch = e.first_channel + n;
    int64_t oh = p / e.OW, ow = p % e.OW;
    double zb = e.zb[ch];
    double acc = static_cast<double>(e.acc[m * e.ldc + n]) - e.za * e.colsum[n] - zb * e.rowsum[m] +
                 static_cast<double>(e.K) * e.za * zb;
    double real = e.sa * e.sb[ch] * acc + (e.bias ? static_cast<double>(e.bias[ch]) : 0.0);
    if (e.residual) {
      int64_t r = image * e.residual_strides[0] + ch * e.residual_strides[1] + oh * e.residual_pixel_strides[0] +
                  ow * e.residual_pixel_strides[1];
      if (e.residual_dtype == DType::kF32) {
        real += static_cast<const float*>(e.residual)[r];
      } else if (e.residual_dtype == DType::kQInt8) {
        real += DequantizeValue<double>(static_cast<const int8_t*>(e.residual)[r], e.sr, e.zr);
      } else {
        real += DequantizeValue<double>(static_cast<const uint8_t*>(e.residual)[r], e.sr, e.zr);
      }
    }
    if (e.relu && real < 0) real = 0;
    if (e.gelu) real = GeluFn{}(real);
    int64_t y = image * e.y_strides[0] + ch * e.y_strides[1] + oh * e.y_pixel_strides[0] + ow * e.y_pixel_strides[1];
    if (e.y_dtype == DType::kF32) {
      static_cast<float*>(e.y)[y] = static_cast<float>(real);
    } else {
      double q = QuantizeValue<double>(real, e.so, e.zo, e.qmin, e.qmax);
      if (e.y_dtype == DType::kQInt8) static_cast<int8_t*>(e.y)[y] = static_cast<int8_t>(q);
      else static_cast<uint8_t*>(e.y)[y] = static_cast<uint8_t>(q);
    }
  }
}

// Visits the two 8-bit quantized storage types.
template <typename F>
std::string VisitInt8(DType dtype, F&& f) {
  if (dtype == DType::kQUInt8) return f(TypeTag<uint8_t>{});
  if (dtype == DType::kQInt8) return f(TypeTag<int8_t>{});
  return "expected quint8 or qint8";
}

}  // namespace

std::string LaunchGather(const Geometry& g, const Operand& y, const Operand& x_base, const Operand& index,
                         int64_t dim_stride, int64_t dim_size, int64_t* bad_index, Stream s) {
  if (g.numel == 0) return "";
  return VisitPlain(y.dtype, [&]<typename T>(TypeTag<T>) {
    GatherLoop<T><<<Blocks(g.numel), kThreads, 0, AsStream(s)>>>(g, y, x_base, index, dim_stride, dim_size, bad_index);
    return LastError();
  });
}

std::string LaunchScatterAdd(const Geometry& g, const Operand& y_base, const Operand& src, const Operand& index,
                             int64_t dim_stride, int64_t dim_size, int64_t* bad_index, Stream s) {
  if (g.numel == 0) return "";
  return VisitPlain(src.dtype, [&]<typename T>(TypeTag<T>) -> std::string {
    if constexpr (kAtomic<T>) {
      ScatterAddLoop<T><<<Blocks(g.numel), kThreads, 0, AsStream(s)>>>(g, y_base, src, index, dim_stride, dim_size,
                                                                         bad_index);
      return LastError();
    } else {
      return std::string("no atomic add for ") + Name(src.dtype);
    }
  });
}

std::string LaunchMaxPool2d(const PoolGeometry& p, DType dtype, const void* x, void* y, int64_t* indices, Stream s) {
  int64_t total = p.N * p.C * p.OH * p.OW;
  if (total == 0) return "";
  return VisitPlain(dtype, [&]<typename T>(TypeTag<T>) {
    MaxPoolLoop<T><<<Blocks(total), kThreads, 0, AsStream(s)>>>(p, static_cast<const T*>(x), static_cast<T*>(y), indices);
    return LastError();
  });
}

std::string LaunchMaxPool2dBackward(DType dtype, int64_t planes, int64_t ohw, int64_t hw, const void* grad_out,
                                    const int64_t* indices, void* grad_in, Stream s) {
  if (planes == 0) return "";
  return VisitPlain(dtype, [&]<typename T>(TypeTag<T>) {
    MaxPoolBackwardLoop<T><<<Blocks(planes), kThreads, 0, AsStream(s)>>>(
        planes, ohw, hw, static_cast<const T*>(grad_out), indices, static_cast<T*>(grad_in));
    return LastError();
  });
}

std::string LaunchBatchNorm(DType dtype, int64_t N, int64_t C, int64_t HW, double eps, const void* x, const void* weight,
                            const void* bias, void* y, void* mean, void* var, BatchNormEpilogue epilogue, Stream s) {
  if (C == 0) return "";
  return VisitPlain(dtype, [&]<typename T>(TypeTag<T>) -> std::string {
    if constexpr (kFloating<T>) {
      using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
      BatchNormLoop<T, S><<<static_cast<int>(C), kThreads, 0, AsStream(s)>>>(
          N, C, HW, eps, static_cast<const T*>(x), static_cast<const T*>(weight), static_cast<const T*>(bias),
          static_cast<T*>(y), static_cast<S*>(mean), static_cast<S*>(var), static_cast<const T*>(epilogue.residual),
          epilogue.relu);
      return LastError();
    } else {
      return "batch norm needs a floating dtype";
    }
  });
}

std::string LaunchBatchNormBackward(DType dtype, int64_t N, int64_t C, int64_t HW, double eps, const void* grad_y,
                                    const void* x, const void* weight, const void* mean, const void* var,
                                    void* grad_x, void* grad_weight, void* grad_bias, const void* bias,
                                    BatchNormEpilogue epilogue, void* grad_residual, Stream s) {
  if (C == 0) return "";
  if (epilogue.relu != (bias != nullptr)) return "batch norm backward: bias is needed with relu, and only then";
  return VisitPlain(dtype, [&]<typename T>(TypeTag<T>) -> std::string {
    if constexpr (kFloating<T>) {
      using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
      BatchNormBackwardLoop<T, S><<<static_cast<int>(C), kThreads, 0, AsStream(s)>>>(
          N, C, HW, eps, static_cast<const T*>(grad_y), static_cast<const T*>(x), static_cast<const T*>(weight),
          static_cast<const S*>(mean), static_cast<const S*>(var), static_cast<T*>(grad_x),
          static_cast<T*>(grad_weight), static_cast<T*>(grad_bias), static_cast<const T*>(bias),
          static_cast<const T*>(epilogue.residual), static_cast<T*>(grad_residual));
      return LastError();
    } else {
      return "batch norm needs a floating dtype";
    }
  });
}

std::string LaunchLayerNorm(DType dtype, int64_t rows, int64_t D, double eps, const void* x, const void* weight,
                            const void* bias, void* y, void* mean, void* rstd, Stream s) {
  if (rows == 0) return "";
  if (rows > 0x7fffffff) return "layer norm: more than 2^31 - 1 rows";
  return VisitPlain(dtype, [&]<typename T>(TypeTag<T>) -> std::string {
    if constexpr (kFloating<T>) {
      using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
      LayerNormLoop<T, S><<<static_cast<unsigned>(rows), kThreads, 0, AsStream(s)>>>(
          D, eps, static_cast<const T*>(x), static_cast<const T*>(weight), static_cast<const T*>(bias),
          static_cast<T*>(y), static_cast<S*>(mean), static_cast<S*>(rstd));
      return LastError();
    } else {
      return "layer norm needs a floating dtype";
    }
  });
}

std::string LaunchSoftmax(DType dtype, int64_t outer, int64_t n, int64_t inner, const void* x, void* y, Stream s) {
  if (outer * n * inner == 0) return "";
  if (inner == 1 && outer > 0x7fffffff) return "softmax: more than 2^31 - 1 rows";
  return VisitPlain(dtype, [&]<typename T>(TypeTag<T>) -> std::string {
    if constexpr (kFloating<T>) {
      if (inner == 1) {
        SoftmaxRowLoop<T><<<static_cast<unsigned>(outer), kThreads, 0, AsStream(s)>>>(n, static_cast<const T*>(x),
                                                                                      static_cast<T*>(y));
      } else {
        SoftmaxColumnLoop<T><<<Blocks(outer * inner), kThreads, 0, AsStream(s)>>>(
            outer, n, inner, static_cast<const T*>(x), static_cast<T*>(y));
      }
      return LastError();
    } else {
      return "softmax needs a floating dtype";
    }
  });
}

std::string LaunchMatmulLoops(DType dtype, int64_t batch, int64_t M, int64_t N, int64_t K, const MatrixOperand& a,
                              const MatrixOperand& b, void* y, Stream s) {
  if (batch * M * N == 0) return "";
  return VisitPlain(dtype, [&]<typename T>(TypeTag<T>) {
    MatmulLoop<T><<<Blocks(batch * M * N), kThreads, 0, AsStream(s)>>>(batch, M, N, K, a, b, static_cast<T*>(y));
    return LastError();
  });
}

std::string LaunchIm2col(const ConvGeometry& c, DType dtype, const void* x, int64_t n0, int64_t count, int64_t g,
                         void* col, Stream s) {
  int64_t total = count * c.CG * c.KH * c.KW * c.OH * c.OW;
  if (total == 0) return "";
  return VisitPlain(dtype, [&]<typename T>(TypeTag<T>) {
    Im2colLoop<T><<<Blocks(total), kThreads, 0, AsStream(s)>>>(c, static_cast<const T*>(x), n0, count, g,
                                                                static_cast<T*>(col));
    return LastError();
  });
}

std::string LaunchCol2im(const ConvGeometry& c, DType dtype, const void* col, int64_t n0, int64_t count, int64_t g,
                         void* grad_x, Stream s) {
  int64_t total = count * c.CG * c.H * c.W;
  if (total == 0) return "";
  return VisitPlain(dtype, [&]<typename T>(TypeTag<T>) {
    Col2imLoop<T><<<Blocks(total), kThreads, 0, AsStream(s)>>>(c, static_cast<const T*>(col), n0, count, g,
                                                                static_cast<T*>(grad_x));
    return LastError();
  });
}

std::string LaunchPackRows(DType dtype, const void* a, int64_t M, int64_t K, int8_t* packed, Stream s) {
  return VisitInt8(dtype, [&]<typename Q>(TypeTag<Q>) {
    PackRowsLoop<Q><<<Blocks(PadTo(M, 4) * PadTo(K, 16)), kThreads, 0, AsStream(s)>>>(static_cast<const Q*>(a), M, K,
                                                                                     packed);
    return LastError();
  });
}

std::string LaunchPackColumns(DType dtype, const void* b, int64_t b_offset, int64_t K, int64_t N, int8_t* packed,
                              Stream s) {
  PackColumnsLoop<<<Blocks(PadTo(N, 4) * PadTo(K, 16)), kThreads, 0, AsStream(s)>>>(b, dtype == DType::kQInt4,
                                                                                   b_offset, K, N, packed);
  return LastError();
}

std::string LaunchIm2colInt8(const ConvGeometry& c, DType dtype, const void* x, int64_t x_zero_point, int64_t n0,
                             int64_t count, int64_t g, int8_t* packed, Stream s) {
  int64_t total = PadTo(count * c.OH * c.OW, 4) * PadTo(c.CG * c.KH * c.KW, 16);
  int8_t zero = static_cast<int8_t>(dtype == DType::kQUInt8 ? x_zero_point - 128 : x_zero_point);
  return VisitInt8(dtype, [&]<typename Q>(TypeTag<Q>) {
    Im2colInt8Loop<Q><<<Blocks(total), kThreads, 0, AsStream(s)>>>(c, static_cast<const Q*>(x), zero, n0, count, g,
                                                                    packed);
    return LastError();
  });
}

std::string LaunchPackConvWeights(const ConvGeometry& c, DType dtype, const void* w, int64_t w_offset, int64_t g,
                                  int8_t* packed, Stream s) {
  int64_t total = PadTo(c.O / c.G, 4) * PadTo(c.CG * c.KH * c.KW, 16);
  PackConvWeightsLoop<<<Blocks(total), kThreads, 0, AsStream(s)>>>(c, w, dtype == DType::kQInt4, w_offset, g, packed);
  return LastError();
}

std::string LaunchRowSums(const int8_t* packed, int64_t rows, int64_t Kp, int32_t* sums, Stream s) {
  if (rows == 0) return "";
  RowSumsLoop<<<Blocks(rows), kThreads, 0, AsStream(s)>>>(packed, rows, Kp, sums);
  return LastError();
}

std::string LaunchInt8GemmLoops(const int8_t* a, const int8_t* bt, int64_t M, int64_t N, int64_t ldk, int32_t* acc,
                                int64_t ldc, Stream s) {
  if (M * N == 0) return "";
  Int8GemmLoop<<<Blocks(M * N), kThreads, 0, AsStream(s)>>>(a, bt, M, N, ldk, acc, ldc);
  return LastError();
}

std::string LaunchEpilogue(const Epilogue& e, Stream s) {
  if (e.rows * e.cols == 0) return "";
  EpilogueLoop<<<Blocks(e.rows * e.cols), kThreads, 0, AsStream(s)>>>(e);
  return LastError();
}

}  // namespace quanta::cuda
