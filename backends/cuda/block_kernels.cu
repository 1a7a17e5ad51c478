// Block-scaled minifloat kernels of the CUDA backend (block_quantize,
// block_dequantize): one thread per block, the scale and the conversions from
// core/minifloat.h, the CPU reference kernel's (backends/cpu/
// reference_quantization.cc) too, so both backends compute the same codes.
#include "backends/cuda/device_util.cuh"
#include "core/minifloat.h"

namespace quanta::cuda {
namespace {

// Block b's first element; element (r, k) of the block is at
// Start(b) + r * matrix_cols + k.
__device__ inline int64_t Start(const BlockShape& g, int64_t b) {
  const int64_t down = g.matrix_rows / g.rows, across = g.matrix_cols / g.cols;
  const int64_t matrix = b / (down * across), in_matrix = b % (down * across);
  return (matrix * g.matrix_rows + in_matrix / across * g.rows) * g.matrix_cols + in_matrix % across * g.cols;
}

template <typename T>
__global__ void BlockQuantizeLoop(BlockShape g, const T* x, MiniFloatFormat element, MiniFloatFormat scale_format,
                                  bool f32_scales, const float* tensor_scale, uint8_t* codes, void* scales,
                                  int64_t threads_total, int bits) {
  const float ts = *tensor_scale;
  QUANTA_GRID_LOOP(t, threads_total) {
    // One thread per block, or (serial) thread 0 for all of them.
    const int64_t first = threads_total == g.n_blocks ? t : 0, last = threads_total == g.n_blocks ? t + 1 : g.n_blocks;
    for (int64_t b = first; b < last; ++b) {
      const int64_t start = Start(g, b);
      float amax = 0;
      for (int64_t r = 0; r < g.rows; ++r) {
        for (int64_t k = 0; k < g.cols; ++k) {
          float v = fabsf(Convert<float>(x[start + r * g.matrix_cols + k]));
          amax = isnan(v) || isnan(amax) ? NAN : fmaxf(amax, v);
        }
      }
      uint32_t stored;
      const float s = BlockScaleOf(f32_scales ? nullptr : &scale_format, element, amax, ts, &stored);
      if (f32_scales) {
        static_cast<float*>(scales)[b] = s;
      } else {
        static_cast<uint8_t*>(scales)[b] = static_cast<uint8_t>(stored);
      }
      for (int64_t r = 0; r < g.rows; ++r) {
        for (int64_t k = 0; k < g.cols; ++k) {
          const int64_t i = start + r * g.matrix_cols + k;
          const float v = s == 0 ? 0.0f : Convert<float>(x[i]) / s;
          StoreMiniFloatCode(bits, codes, i, EncodeMiniFloat(element, v));
        }
      }
    }
  }
}

template <typename T>
__global__ void BlockDequantizeLoop(BlockShape g, T* y, MiniFloatFormat element, MiniFloatFormat scale_format,
                                    bool f32_scales, const float* tensor_scale, const uint8_t* codes,
                                    const void* scales, int bits) {
  const float ts = *tensor_scale;
  QUANTA_GRID_LOOP(b, g.n_blocks) {
    const uint32_t stored = f32_scales ? FloatBits(static_cast<const float*>(scales)[b])
                                       : static_cast<const uint8_t*>(scales)[b];
    const float s = DecodeBlockScale(f32_scales ? nullptr : &scale_format, stored, ts);
    const int64_t start = Start(g, b);
    for (int64_t r = 0; r < g.rows; ++r) {
      for (int64_t k = 0; k < g.cols; ++k) {
        const int64_t i = start + r * g.matrix_cols + k;
        y[i] = Convert<T>(DecodeMiniFloat(element, LoadMiniFloatCode(bits, codes, i)) * s);
      }
    }
  }
}

}  // namespace

std::string LaunchBlockQuantize(const BlockShape& b, DType x_dtype, const void* x, const MiniFloatFormat& element,
                                const MiniFloatFormat* scale_format, const float* tensor_scale, void* codes,
                                void* scales, Stream s) {
  if (b.n_blocks == 0) return "";
  // Blocks whose codes end mid-byte share bytes with their neighbours: one thread.
  const bool serial = (b.cols * Info(element.dtype).bits) % 8 != 0;
  const int64_t threads = serial ? 1 : b.n_blocks;
  return VisitPlain(x_dtype, [&]<typename T>(TypeTag<T>) -> std::string {
    if constexpr (!kFloating<T>) {
      return "block_quantize needs a floating input";
    } else {
      BlockQuantizeLoop<T><<<Blocks(threads), kThreads, 0, AsStream(s)>>>(
          b, static_cast<const T*>(x), element, scale_format ? *scale_format : element, scale_format == nullptr,
          tensor_scale, static_cast<uint8_t*>(codes), scales, threads, Info(element.dtype).bits);
      return LastError();
    }
  });
}

std::string LaunchBlockDequantize(const BlockShape& b, DType y_dtype, void* y, const MiniFloatFormat& element,
                                  const MiniFloatFormat* scale_format, const float* tensor_scale, const void* codes,
                                  const void* scales, Stream s) {
  if (b.n_blocks == 0) return "";
  return VisitPlain(y_dtype, [&]<typename T>(TypeTag<T>) -> std::string {
    if constexpr (!kFloating<T>) {
      return "block_dequantize needs a floating output";
    } else {
      BlockDequantizeLoop<T><<<Blocks(b.n_blocks), kThreads, 0, AsStream(s)>>>(
          b, static_cast<T*>(y), element, scale_format ? *scale_format : element, scale_format == nullptr,
          tensor_scale, static_cast<const uint8_t*>(codes), scales, Info(element.dtype).bits);
      return LastError();
    }
  });
}

}  // namespace quanta::cuda
