// Registers the CPU backend: reference kernels everywhere, oneDNN where faster.
#include "backends/cpu/cpu_backend.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "backends/cpu/block_cache.h"
#include "backends/cpu/onednn.h"
#include "backends/cpu/reference_kernels.h"
#include "core/error.h"

namespace quanta::cpu {
namespace {

std::atomic<int> reference_mode{0};

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

  void* Allocate(size_t bytes, int) override { return blocks_.Allocate(bytes); }
  void Free(void* ptr, size_t bytes, int) override {
    OneDnnForget(ptr);  // before the block can be reused (Note [Weight cache])
    blocks_.Free(ptr, bytes);
  }
  MemoryStats Memory(int) const override { return blocks_.Stats(); }
  void ResetPeakMemory(int) override { blocks_.ResetPeak(); }
  void EmptyCache(int) override { blocks_.Empty(); }
  void CopyFromHost(void* dst, const void* src, size_t bytes, int) override { std::memcpy(dst, src, bytes); }
  void CopyToHost(void* dst, const void* src, size_t bytes, int) override { std::memcpy(dst, src, bytes); }
  void CopyOnDevice(void* dst, const void* src, size_t bytes, int) override { std::memcpy(dst, src, bytes); }
  void SetNumThreads(int n) override { OneDnnSetNumThreads(n); }

  Kernel Find(Op op) const override {
    return reference_mode.load(std::memory_order_relaxed) > 0 ? ReferenceKernel(op) : Backend::Find(op);
  }

 private:
  BlockCache blocks_;
};

QUANTA_REGISTER_BACKEND(CpuBackend);

}  // namespace

ReferenceModeGuard::ReferenceModeGuard() { ++reference_mode; }
ReferenceModeGuard::~ReferenceModeGuard() { --reference_mode; }

}  // namespace quanta::cpu
