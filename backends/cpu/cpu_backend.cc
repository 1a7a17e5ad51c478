// Registers the CPU backend: reference kernels everywhere, oneDNN where faster.
#include "backends/cpu/cpu_backend.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <new>

#include "backends/cpu/onednn.h"
#include "backends/cpu/reference_kernels.h"
#include "core/block_cache.h"
#include "core/error.h"

namespace quanta::cpu {
namespace {

std::atomic<int> reference_mode{0};

// Note [CPU block cache]: glibc serves blocks above its mmap threshold with
// mmap and returns them with munmap, so a model whose activations are a few MiB
// each pays a page fault per 4 KiB page on every forward (28% of BERT-base's
// int8 time after a batch of another size, measured with perf). Below the
// threshold the heap's top is trimmed back to the kernel whenever enough of it
// is free, so blocks of a few hundred KiB page-fault the same way: a layer norm
// at BERT-base's 128x768 composed of core ops (393 KiB intermediates) took
// 760-980 us with 1 MiB as the floor here and 75-96 us with 64 KiB (bench_core
// BM_BertNorms, Zen 4; perf stat: 700k page faults -> 1.6k). Blocks of 64 KiB
// or more are therefore kept on free (core/block_cache.h), by size class (four
// classes per power of two, so at most 25% is wasted), up to 2 GiB in all;
// Backend::EmptyCache returns them. Smaller blocks go straight back to malloc,
// whose bins serve most of them without a system call.
constexpr size_t kAlignment = 64;  // one cache line, one AVX-512 vector
constexpr size_t kMinCached = size_t{64} << 10, kMaxCached = size_t{2} << 30;

size_t SizeClass(size_t bytes) {
  size_t aligned = (std::max<size_t>(bytes, 1) + kAlignment - 1) / kAlignment * kAlignment;
  if (aligned < kMinCached) return aligned;
  size_t step = std::bit_floor(aligned) / 4;
  return (aligned + step - 1) / step * step;
}

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
  // "winograd" "1" (default) / "0": Note [Winograd convolutions] in onednn.cc.
  // "int8_implementation" "rule" (default) / "first" / a name prefix: Note
  // [int8 convolution implementations] there.
  void SetOption(const std::string& key, const std::string& value) override {
    if (key == "winograd" && (value == "0" || value == "1")) {
      OneDnnSetWinograd(value == "1");
    } else if (key == "int8_implementation" && !value.empty()) {
      OneDnnSetInt8Implementation(value);
    } else {
      Backend::SetOption(key, value);
    }
  }

  Kernel Find(Op op) const override {
    return reference_mode.load(std::memory_order_relaxed) > 0 ? ReferenceKernel(op) : Backend::Find(op);
  }

 private:
  BlockCache blocks_{{.allocate = [](size_t n) { return std::aligned_alloc(kAlignment, n); },
                      .release = [](void* p) { std::free(p); },
                      .name = "cpu"},
                     &SizeClass, kMinCached, kMaxCached};
};

QUANTA_REGISTER_BACKEND(CpuBackend);

}  // namespace

ReferenceModeGuard::ReferenceModeGuard() { ++reference_mode; }
ReferenceModeGuard::~ReferenceModeGuard() { --reference_mode; }

}  // namespace quanta::cpu
