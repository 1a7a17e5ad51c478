// cuBLASLt's block-scaled FP8 GEMM (backends/cuda/fp8_gemm.h).
#include "backends/cuda/fp8_gemm.h"

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <string>

#include "absl/strings/str_cat.h"

namespace quanta::cuda {
namespace {

absl::Status LtStatus(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  std::string why = absl::StrCat("fp8 block-scaled matmul: ", what, ": ", cublasLtGetStatusString(s));
  return s == CUBLAS_STATUS_NOT_SUPPORTED || s == CUBLAS_STATUS_ARCH_MISMATCH ? absl::FailedPreconditionError(why)
                                                                             : absl::InternalError(why);
}

absl::Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("fp8 block-scaled matmul: ", what, ": ", cudaGetErrorString(e)));
}

#define QUANTA_RETURN_IF(expr)         \
  do {                                 \
    absl::Status _s = (expr);          \
    if (!_s.ok()) return _s;           \
  } while (0)

// One product with the descriptors below; D's dtype `out` (CUDA_R_32F or
// CUDA_R_16BF, whichever cuBLASLt takes with block scales on this device).
struct Gemm {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~Gemm() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

}  // namespace

absl::StatusOr<Tensor> Fp8BlockScaledMatmul(const BlockQuantized& x, const BlockQuantized& w) {
  const std::string args = absl::StrCat("x ", x.codes.Describe(), " in ", x.format.ToString(), ", w ",
                                        w.codes.Describe(), " in ", w.format.ToString());
  if (!(x.format == BlockFormat::Tile(128)) || !(w.format == BlockFormat::Block(128))) {
    return absl::InvalidArgumentError(
        "fp8 block-scaled matmul: x must be E4M3 in 1 x 128 tiles and w E4M3 in 128 x 128 blocks, f32 scales (" +
        args + ")");
  }
  if (x.codes.dim() != 2 || w.codes.dim() != 2 || x.codes.size(1) != w.codes.size(1)) {
    return absl::InvalidArgumentError("fp8 block-scaled matmul: x (M, K) and w (N, K) share K (" + args + ")");
  }
  const int64_t M = x.codes.size(0), K = x.codes.size(1), N = w.codes.size(0);
  if (M % 16 != 0 || K % 128 != 0 || N % 128 != 0) {
    return absl::InvalidArgumentError(
        "fp8 block-scaled matmul: M must be a multiple of 16, K and N of 128 (" + args + ")");
  }
  const Device dev = x.codes.device();
  if (dev.type != DeviceType::kCuda || w.codes.device() != dev || x.scales.device() != dev ||
      w.scales.device() != dev) {
    return absl::InvalidArgumentError("fp8 block-scaled matmul: every operand on one CUDA device (" + args + ")");
  }
  QUANTA_RETURN_IF(CudaStatus(cudaSetDevice(dev.index), "cudaSetDevice"));
  cudaDeviceProp prop;
  QUANTA_RETURN_IF(CudaStatus(cudaGetDeviceProperties(&prop, dev.index), "cudaGetDeviceProperties"));
  if (prop.major != 9) {
    return absl::FailedPreconditionError(absl::StrCat(
        "fp8 block-scaled matmul: cuBLASLt's 1x128 / 128x128 FP8 scaling runs on sm_90 (Hopper); this GPU is sm_",
        prop.major, prop.minor));
  }
  // Note [FP8 block scale layouts].
  const Tensor x_codes = x.codes.Contiguous(), w_codes = w.codes.Contiguous();
  const Tensor x_scales = x.scales.Transpose(0, 1).Contiguous();  // (K / 128, M)
  Tensor w_scales = w.scales.Contiguous();                        // (N / 128, K / 128)
  const int64_t kb = K / 128, kb4 = (kb + 3) / 4 * 4;
  if (kb4 != kb) w_scales = Concat({w_scales, Full({N / 128, kb4 - kb}, 1.0, DType::kF32, dev)}, 1).Contiguous();

  static cublasLtHandle_t handle = nullptr;  // one for the process (device 0's context is shared)
  if (handle == nullptr) QUANTA_RETURN_IF(LtStatus(cublasLtCreate(&handle), "cublasLtCreate"));
  constexpr size_t kWorkspace = size_t{32} << 20;
  static void* workspace = nullptr;
  if (workspace == nullptr) QUANTA_RETURN_IF(CudaStatus(cudaMalloc(&workspace, kWorkspace), "workspace"));

  for (cudaDataType_t out : {CUDA_R_32F, CUDA_R_16BF}) {
    Gemm g;
    QUANTA_RETURN_IF(LtStatus(cublasLtMatmulDescCreate(&g.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc"));
    const cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
    const cublasLtMatmulMatrixScale_t a_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F,
                                      b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    const void* a_scale = w_scales.raw_data();
    const void* b_scale = x_scales.raw_data();
    QUANTA_RETURN_IF(LtStatus(cublasLtMatmulDescSetAttribute(g.op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof(t)), "transa"));
    QUANTA_RETURN_IF(LtStatus(cublasLtMatmulDescSetAttribute(g.op, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof(n)), "transb"));
    QUANTA_RETURN_IF(LtStatus(
        cublasLtMatmulDescSetAttribute(g.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &a_mode, sizeof(a_mode)), "A scale mode"));
    QUANTA_RETURN_IF(LtStatus(
        cublasLtMatmulDescSetAttribute(g.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &b_mode, sizeof(b_mode)), "B scale mode"));
    QUANTA_RETURN_IF(LtStatus(
        cublasLtMatmulDescSetAttribute(g.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale, sizeof(a_scale)), "A scales"));
    QUANTA_RETURN_IF(LtStatus(
        cublasLtMatmulDescSetAttribute(g.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale, sizeof(b_scale)), "B scales"));
    // Column-major: w is K x N (ld K) read transposed, x^T is K x M (ld K), y^T is N x M (ld N).
    QUANTA_RETURN_IF(LtStatus(cublasLtMatrixLayoutCreate(&g.a, CUDA_R_8F_E4M3, K, N, K), "A layout"));
    QUANTA_RETURN_IF(LtStatus(cublasLtMatrixLayoutCreate(&g.b, CUDA_R_8F_E4M3, K, M, K), "B layout"));
    QUANTA_RETURN_IF(LtStatus(cublasLtMatrixLayoutCreate(&g.d, out, N, M, N), "D layout"));
    QUANTA_RETURN_IF(LtStatus(cublasLtMatmulPreferenceCreate(&g.pref), "preference"));
    QUANTA_RETURN_IF(LtStatus(cublasLtMatmulPreferenceSetAttribute(g.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                                   &kWorkspace, sizeof(kWorkspace)),
                              "workspace size"));
    cublasLtMatmulHeuristicResult_t heuristic = {};
    int found = 0;
    cublasStatus_t h = cublasLtMatmulAlgoGetHeuristic(handle, g.op, g.a, g.b, g.d, g.d, g.pref, 1, &heuristic, &found);
    if (h != CUBLAS_STATUS_SUCCESS || found == 0) continue;  // this output dtype is not offered: try the next
    Tensor y = Tensor::Empty({M, N}, out == CUDA_R_32F ? DType::kF32 : DType::kBF16, dev);
    const float one = 1, zero = 0;
    QUANTA_RETURN_IF(CudaStatus(cudaDeviceSynchronize(), "waiting for the operands"));  // the backend's stream
    QUANTA_RETURN_IF(LtStatus(cublasLtMatmul(handle, g.op, &one, w_codes.raw_data(), g.a, x_codes.raw_data(), g.b,
                                             &zero, y.raw_data(), g.d, y.raw_data(), g.d, &heuristic.algo, workspace,
                                             kWorkspace, nullptr),
                              "cublasLtMatmul"));
    QUANTA_RETURN_IF(CudaStatus(cudaDeviceSynchronize(), "the product"));
    return y.To(DType::kF32);
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "fp8 block-scaled matmul: cuBLASLt ", cublasLtGetVersion(), " offers no algorithm for E4M3 x E4M3 with ",
      "1x128 / 128x128 f32 scales on this sm_", prop.major, prop.minor, " GPU (f32 or bf16 output; needs cuBLAS 12.9+)"));
}

}  // namespace quanta::cuda
