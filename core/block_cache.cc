// The block cache's bookkeeping; the device's allocator only on a miss.
#include "core/block_cache.h"

#include <algorithm>

#include "core/error.h"

namespace quanta {

void* BlockCache::Allocate(size_t bytes) {
  const size_t size = size_class_(bytes);
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
  void* p = source_.allocate(size);
  if (p == nullptr) {  // give the cache back and try once more
    Empty();
    p = source_.allocate(size);
  }
  if (p == nullptr) {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.in_use -= static_cast<int64_t>(size);
  }
  QUANTA_CHECK(p != nullptr, source_.name, ": out of memory allocating ", bytes, " bytes (", Stats().in_use,
               " bytes in use by other blocks)");
  return p;
}

void BlockCache::Free(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  const size_t size = size_class_(bytes);
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.in_use -= static_cast<int64_t>(size);
    if (size >= min_cached_ && static_cast<size_t>(stats_.cached) + size <= max_cached_) {
      free_.emplace(size, ptr);
      stats_.cached += static_cast<int64_t>(size);
      return;
    }
  }
  source_.release(ptr);
}

void BlockCache::Empty() {
  std::multimap<size_t, void*> blocks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    blocks.swap(free_);
    stats_.cached = 0;
  }
  if (blocks.empty()) return;
  if (source_.before_release) source_.before_release();
  for (auto& [size, p] : blocks) source_.release(p);
}

MemoryStats BlockCache::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void BlockCache::ResetPeak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak = stats_.in_use;
}

}  // namespace quanta
