// The CPU block cache (Note [CPU block cache]).
#include "backends/cpu/block_cache.h"

#include <algorithm>
#include <bit>
#include <cstdlib>

#include "core/error.h"

namespace quanta::cpu {

size_t BlockCache::ClassOf(size_t bytes) {
  size_t aligned = (std::max<size_t>(bytes, 1) + kAlignment - 1) / kAlignment * kAlignment;
  if (aligned < kMinCached) return aligned;
  size_t step = std::bit_floor(aligned) / 4;  // four classes per power of two
  return (aligned + step - 1) / step * step;
}

void* BlockCache::Allocate(size_t bytes) {
  const size_t size = ClassOf(bytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.in_use += static_cast<int64_t>(size);
    stats_.peak = std::max(stats_.peak, stats_.in_use);
    if (auto it = free_.find(size); it != free_.end()) {
      void* p = it->second;
      free_.erase(it);
      stats_.cached -= static_cast<int64_t>(size);
      return p;
    }
    ++stats_.device_allocations;
  }
  void* p = std::aligned_alloc(kAlignment, size);
  if (p == nullptr) {  // give the cache back and try once more
    Empty();
    p = std::aligned_alloc(kAlignment, size);
  }
  if (p == nullptr) {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.in_use -= static_cast<int64_t>(size);
  }
  QUANTA_CHECK(p != nullptr, "cpu: out of memory allocating ", bytes, " bytes");
  return p;
}

void BlockCache::Free(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  const size_t size = ClassOf(bytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.in_use -= static_cast<int64_t>(size);
    if (size >= kMinCached && static_cast<size_t>(stats_.cached) + size <= kMaxCached) {
      free_.emplace(size, ptr);
      stats_.cached += static_cast<int64_t>(size);
      return;
    }
  }
  std::free(ptr);
}

void BlockCache::Empty() {
  std::multimap<size_t, void*> blocks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    blocks.swap(free_);
    stats_.cached = 0;
  }
  for (auto& [size, p] : blocks) std::free(p);
}

MemoryStats BlockCache::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void BlockCache::ResetPeak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak = stats_.in_use;
}

}  // namespace quanta::cpu
