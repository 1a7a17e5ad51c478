// The caching device allocator: blocks are rounded to a size class and, when
// freed, kept for the next request of that class instead of going back to
// cudaFree, so a training step allocates nothing from the driver once warm.
// Not stream-aware beyond one compute stream per device: a freed block may be
// handed out while kernels queued earlier still use it, which the stream order
// makes safe (Note [One compute stream] in cuda_backend.cc).
//
//   CachingAllocator a(0);
//   void* p = a.Allocate(1000);   // a 1024-byte block
//   a.Free(p, 1000);              // kept for the next 1024-byte request
//   a.Stats().peak                // most bytes in use at once
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "core/backend.h"

namespace quanta::cuda {

class CachingAllocator {
 public:
  explicit CachingAllocator(int device) : device_(device) {}
  ~CachingAllocator() = default;  // blocks live until process exit
  void* Allocate(size_t bytes);
  void Free(void* ptr, size_t bytes);
  // Returns cached blocks to the driver.
  void EmptyCache();
  MemoryStats Stats() const;
  void ResetPeak();
  // The size class of a request: 512-byte steps below 1 MiB, 1 MiB steps above.
  static size_t RoundSize(size_t bytes);

 private:
  void EmptyCacheLocked();

  int device_;
  mutable std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;  // size class -> cached blocks
  MemoryStats stats_;
};

}  // namespace quanta::cuda
