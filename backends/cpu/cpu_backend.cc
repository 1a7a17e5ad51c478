// Registers the CPU backend: reference kernels everywhere, oneDNN where faster.
#include "backends/cpu/cpu_backend.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "backends/cpu/onednn.h"
#include "backends/cpu/reference_kernels.h"
#include "core/error.h"

namespace quanta::cpu {
namespace {

std::atomic<int> reference_mode{0};
constexpr size_t kAlignment = 64;  // one cache line, one AVX-512 vector

class CpuBackend : public Backend {
 public:
  CpuBackend() : Backend(DeviceType::kCpu) {
    for (int i = 0; i < kNumOps; ++i) {
      SetKernel(static_cast<Op>(i), ReferenceKernel(static_cast<Op>(i)));
    }
    SetKernel(Op::kMatmul, &OneDnnMatmul);
    SetKernel(Op::kConv2d, &OneDnnConv2d);
    SetKernel(Op::kConv2dBackwardInput, &OneDnnConv2dBackwardInput);
    SetKernel(Op::kConv2dBackwardWeight, &OneDnnConv2dBackwardWeight);
    SetKernel(Op::kQuantizedMatmul, &OneDnnQuantizedMatmul);
    SetKernel(Op::kQuantizedConv2d, &OneDnnQuantizedConv2d);
  }

  void* Allocate(size_t bytes, int) override {
    void* p = std::aligned_alloc(kAlignment, (bytes + kAlignment - 1) / kAlignment * kAlignment);
    QUANTA_CHECK(p != nullptr, "cpu: out of memory allocating ", bytes, " bytes");
    return p;
  }
  void Free(void* ptr, size_t, int) override {
    OneDnnForget(ptr);
    std::free(ptr);
  }
  void CopyFromHost(void* dst, const void* src, size_t bytes, int) override { std::memcpy(dst, src, bytes); }
  void CopyToHost(void* dst, const void* src, size_t bytes, int) override { std::memcpy(dst, src, bytes); }
  void CopyOnDevice(void* dst, const void* src, size_t bytes, int) override { std::memcpy(dst, src, bytes); }
  void SetNumThreads(int n) override { OneDnnSetNumThreads(n); }

  Kernel Find(Op op) const override {
    return reference_mode.load(std::memory_order_relaxed) > 0 ? ReferenceKernel(op) : Backend::Find(op);
  }
};

QUANTA_REGISTER_BACKEND(CpuBackend);

}  // namespace

ReferenceModeGuard::ReferenceModeGuard() { ++reference_mode; }
ReferenceModeGuard::~ReferenceModeGuard() { --reference_mode; }

}  // namespace quanta::cpu
