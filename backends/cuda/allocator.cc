// The caching allocator's bookkeeping; cudaMalloc only on a cache miss, and on
// out-of-memory the cache is emptied and the request retried once.
#include "backends/cuda/allocator.h"

#include <cuda_runtime.h>

#include "core/error.h"

namespace quanta::cuda {

size_t CachingAllocator::RoundSize(size_t bytes) {
  constexpr size_t kSmall = 512, kLarge = size_t{1} << 20;
  if (bytes < kLarge) return (bytes + kSmall - 1) / kSmall * kSmall;
  return (bytes + kLarge - 1) / kLarge * kLarge;
}

void* CachingAllocator::Allocate(size_t bytes) {
  size_t size = RoundSize(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  void* p = nullptr;
  auto it = free_.find(size);
  if (it != free_.end() && !it->second.empty()) {
    p = it->second.back();
    it->second.pop_back();
    stats_.cached -= static_cast<int64_t>(size);
  } else {
    cudaSetDevice(device_);
    cudaError_t e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // clear it, free the cache, try once more
      EmptyCacheLocked();
      e = cudaMalloc(&p, size);
    }
    QUANTA_CHECK(e == cudaSuccess, "cuda:", device_, ": allocating ", bytes, " bytes failed: ", cudaGetErrorString(e),
                 " (", stats_.in_use, " bytes in use, ", stats_.cached, " cached)");
    ++stats_.device_allocations;
  }
  stats_.in_use += static_cast<int64_t>(size);
  if (stats_.in_use > stats_.peak) stats_.peak = stats_.in_use;
  return p;
}

void CachingAllocator::Free(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  size_t size = RoundSize(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  free_[size].push_back(ptr);
  stats_.in_use -= static_cast<int64_t>(size);
  stats_.cached += static_cast<int64_t>(size);
}

void CachingAllocator::EmptyCacheLocked() {
  cudaSetDevice(device_);
  cudaDeviceSynchronize();  // queued kernels may still use cached blocks
  for (auto& [size, blocks] : free_) {
    for (void* p : blocks) cudaFree(p);
  }
  free_.clear();
  stats_.cached = 0;
}

void CachingAllocator::EmptyCache() {
  std::lock_guard<std::mutex> lock(mu_);
  EmptyCacheLocked();
}

MemoryStats CachingAllocator::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachingAllocator::ResetPeak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak = stats_.in_use;
}

}  // namespace quanta::cuda
