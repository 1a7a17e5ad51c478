// The narrow interface every device backend implements: an allocator, copies,
// and a kernel table it fills for the ops it supports. Core's frontends dispatch
// through it; backends never see each other, autograd, nn or quant.
//
//   class MyBackend : public Backend {
//     MyBackend() : Backend(DeviceType::kCuda) { SetKernel(Op::kAdd, &MyAdd); }
//     ...allocator and copies...
//   };
//   QUANTA_REGISTER_BACKEND(MyBackend);   // in the backend's .cc (alwayslink)
//   Backend& b = GetBackend(Device::Cuda()); // throws if not linked or no device
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/device.h"
#include "core/ops.def"

namespace quanta {

class Tensor;

enum class Op : uint8_t {
#define QUANTA_OP_ENUM(name, str) k##name,
  QUANTA_OPS(QUANTA_OP_ENUM)
#undef QUANTA_OP_ENUM
};
#define QUANTA_OP_COUNT(name, str) +1
inline constexpr int kNumOps = 0 QUANTA_OPS(QUANTA_OP_COUNT);
inline constexpr int kNumStructuralOps = 0 QUANTA_VIEW_OPS(QUANTA_OP_COUNT);
#undef QUANTA_OP_COUNT
// Structural ops (views, concat) come last in ops.def and have no kernels.
inline constexpr bool IsStructural(Op op) {
  return static_cast<int>(op) >= kNumOps - kNumStructuralOps;
}

const char* OpName(Op op);

// Attributes an op takes besides its tensors. Each op reads the fields its
// frontend documents; the rest stay at their defaults.
struct OpAttrs {
  std::vector<int64_t> dims;        // reductions: reduced dims (sorted); gather/index_select: {dim}
  double scalar = 0;                // fill value; arange start; uniform low; normal mean; bernoulli p
  double scalar2 = 0;               // arange step; uniform high; normal std
  int64_t kernel[2] = {1, 1};       // max_pool2d
  int64_t stride[2] = {1, 1};       // conv2d, max_pool2d
  int64_t padding[2] = {0, 0};      // conv2d
  int64_t dilation[2] = {1, 1};     // conv2d
  int64_t groups = 1;               // conv2d
  uint64_t seed = 0, offset = 0;    // random ops: Philox key and first counter
  double quant_min = 0, quant_max = 0;  // quantize, fake_quantize: the integer range
  int fake_quant_gradient = 0;      // fake_quantize: a FakeQuantGradient (core/ops.h)
  double ewgs_delta = 0;            // fake_quantize with EWGS
  double lsq_grad_scale = 1;        // fake_quantize: factor on the scale's gradient (LSQ)
  bool residual = false, relu = false, gelu = false;  // integer ops: fused post-ops (IntegerPostOps in core/ops.h)
  bool varying_input_scale = false;                   // integer ops: IntegerPostOps::varying_input_scale
  int64_t block[2] = {1, 1};        // block_quantize / block_dequantize: a block's rows and columns
};

// One call of a kernel: inputs as the frontend prepared them (broadcast, same
// rank, ...), outputs already allocated on the same device.
struct KernelCall {
  Op op;
  std::span<const Tensor> in;
  std::span<Tensor> out;
  const OpAttrs& attrs;
};
using Kernel = void (*)(const KernelCall&);

// A device allocator's figures, in bytes (a caching allocator's; zeros where a
// backend keeps none).
struct MemoryStats {
  int64_t in_use = 0;              // held by live tensors
  int64_t peak = 0;                // most in use at once since the last reset
  int64_t cached = 0;              // freed, kept for reuse
  int64_t device_allocations = 0;  // calls into the driver's allocator
};

class Backend {
 public:
  explicit Backend(DeviceType type) : type_(type) { kernels_.fill(nullptr); }
  virtual ~Backend() = default;

  DeviceType type() const { return type_; }
  // Empty when usable; otherwise why not (e.g. "no CUDA device present").
  virtual std::string Unavailable() const { return ""; }
  virtual int DeviceCount() const { return 1; }

  virtual void* Allocate(size_t bytes, int device_index) = 0;
  virtual void Free(void* ptr, size_t bytes, int device_index) = 0;
  virtual void CopyFromHost(void* dst, const void* src, size_t bytes, int device_index) = 0;
  virtual void CopyToHost(void* dst, const void* src, size_t bytes, int device_index) = 0;
  virtual void CopyOnDevice(void* dst, const void* src, size_t bytes, int device_index) = 0;
  // Waits for queued work (a no-op on the CPU).
  virtual void Synchronize(int /*device_index*/) {}
  // Threads for the backend's own vendor library (oneDNN's OpenMP pool, ...).
  virtual void SetNumThreads(int /*n*/) {}
  // The device in words ("NVIDIA H200, sm_90, 132 SMs, 139.8 GiB"); "" if none.
  virtual std::string DeviceName(int /*device_index*/) const { return ""; }
  virtual MemoryStats Memory(int /*device_index*/) const { return {}; }
  virtual void ResetPeakMemory(int /*device_index*/) {}
  // Returns cached blocks to the driver.
  virtual void EmptyCache(int /*device_index*/) {}
  // A backend's own switch, e.g. the CUDA backend's "tf32" ("0"/"1") and "conv"
  // ("cudnn"/"gemm"). Throws quanta::Error naming the key or value it does not know.
  virtual void SetOption(const std::string& key, const std::string& value);

  // Note [No silent slow path]: a fast path (oneDNN, cuBLASLt) that refuses a
  // case and runs the reference loop instead says so here, with the case in
  // words ("qint8 [64, 32, 14, 14] x qint4 [64, 32, 3, 3]: why"). The backend
  // counts fallbacks per op and warns on stderr once per op and case; tests
  // assert a count is 0 to prove the fast path ran.
  void NoteFallback(Op op, const std::string& what);
  int64_t FallbackCount(Op op) const;
  void ResetFallbackCounts();

  bool Supports(Op op) const { return kernels_[static_cast<int>(op)] != nullptr; }
  // The kernel for op, or nullptr if unsupported. Virtual so that a backend can
  // choose per call (the CPU backend's reference mode, see backends/cpu).
  virtual Kernel Find(Op op) const { return kernels_[static_cast<int>(op)]; }

 protected:
  void SetKernel(Op op, Kernel k) { kernels_[static_cast<int>(op)] = k; }

 private:
  DeviceType type_;
  std::array<Kernel, kNumOps> kernels_;
  std::array<std::atomic<int64_t>, kNumOps> fallbacks_{};
  std::mutex warned_mu_;
  std::set<std::string> warned_;  // "op|case" already reported
};

// Registration: each backend library registers one instance at load time.
void RegisterBackend(std::unique_ptr<Backend> backend);
// The backend for a device type, or nullptr when none is linked in.
Backend* FindBackend(DeviceType type);
// The backend for a device; throws quanta::Error naming the reason when it is
// not linked in or unavailable (no GPU, index out of range).
Backend& GetBackend(const Device& device);
// Whether tensors can be made on `device` (backend linked, device present).
bool IsAvailable(const Device& device);

// Threads for core's CPU loops and every backend's library.
void SetNumThreads(int n);
int GetNumThreads();

#define QUANTA_REGISTER_BACKEND(Type)                                   \
  static const bool quanta_backend_registered_##Type = [] {            \
    ::quanta::RegisterBackend(std::make_unique<Type>());               \
    return true;                                                        \
  }()

}  // namespace quanta
