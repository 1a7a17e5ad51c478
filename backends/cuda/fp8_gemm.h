// DeepSeek-V3's FP8 GEMM on Hopper tensor cores, through cuBLASLt's block
// scaling (issue 21): y (M, N) = x (M, K) w^T with x in E4M3 1 x 128 tiles
// (BlockFormat::Tile(128)) and w in E4M3 128 x 128 blocks (BlockFormat::Block(128)),
// f32 scales, the products accumulated by the tensor cores (cuBLASLt promotes
// to f32). The CPU emulation of the same product (quant/fp8.h: f32 GEMMs of the
// dequantized operands) is its reference; tests/backends/cuda_test.cc holds it
// to that where a GPU is present.
//
//   BlockQuantized xq = BlockQuantize(x, BlockFormat::Tile(128));   // on the GPU
//   BlockQuantized wq = BlockQuantize(w, BlockFormat::Block(128));
//   absl::StatusOr<Tensor> y = cuda::Fp8BlockScaledMatmul(xq, wq);  // f32 (M, N)
//
// Note [FP8 block scale layouts]: cuBLASLt reads the scales in its own order.
// Its column-major product is y^T = w x^T with A = w (TRANSA = T) and B = x^T:
// x's tile scales (CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F on B) go M-major,
// element (i, kb) at kb * M + i, i.e. BlockQuantize's (M, K / 128) transposed;
// w's block scales (BLK128x128_32F on A) go K-major per 128 rows of w, element
// (nb, kb) at nb * Kb4 + kb with Kb4 = K / 128 rounded up to 4, i.e.
// BlockQuantize's (N / 128, K / 128) padded with ones. These are the layouts
// PyTorch's _scaled_mm hands cuBLASLt for the same recipe; no GPU has run this
// code yet (docs/minifloats.md), so the device test is what confirms them.
//
// Only in --config=cuda builds (the header is always there, the definition is
// not). Errors: InvalidArgument for formats, shapes (M a multiple of 16, K and N
// of 128) or devices; FailedPrecondition where the GPU or cuBLASLt cannot
// (block scaling needs sm_90 and cuBLAS 12.9 or later).
#pragma once

#include "absl/status/statusor.h"
#include "core/ops.h"

namespace quanta::cuda {

absl::StatusOr<Tensor> Fp8BlockScaledMatmul(const BlockQuantized& x, const BlockQuantized& w);

}  // namespace quanta::cuda
