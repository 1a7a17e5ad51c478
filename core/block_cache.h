// A caching allocator over a device's own one, for backends: a request is
// rounded to a size class, and a freed block is kept for the next request of
// its class instead of going back to the device. The CPU backend (Note [CPU
// block cache] in backends/cpu/cpu_backend.cc) and the CUDA backend (one per
// device) use it with their own raw allocator and size classes. Not an
// allocator itself: it never touches the memory it hands out.
//
//   BlockCache cache({.allocate = [](size_t n) { return std::aligned_alloc(64, n); }, .release = &std::free,
//                     .name = "cpu"},
//                    &SizeClass, /*min_cached=*/1 << 20, /*max_cached=*/size_t{2} << 30);
//   void* p = cache.Allocate(4 << 20);   // a cached block of its class, or a new one
//   cache.Free(p, 4 << 20);              // kept for the next request of that class
//   cache.Stats().peak;                  // most bytes in use at once
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "core/backend.h"

namespace quanta {

class BlockCache {
 public:
  // The device's own allocator.
  struct Source {
    std::function<void*(size_t)> allocate;  // nullptr when the device is out of memory
    std::function<void(void*)> release;
    std::function<void()> before_release;   // before cached blocks go back (CUDA: wait for queued kernels); optional
    std::string name;                       // "cpu", "cuda:0": for the out-of-memory message
  };
  using SizeClass = size_t (*)(size_t bytes);

  // Blocks of at least min_cached bytes are kept on free, up to max_cached
  // bytes in all; smaller ones, and those over the cap, go straight back.
  BlockCache(Source source, SizeClass size_class, size_t min_cached = 0, size_t max_cached = SIZE_MAX)
      : source_(std::move(source)), size_class_(size_class), min_cached_(min_cached), max_cached_(max_cached) {}
  ~BlockCache() { Empty(); }

  // On out-of-memory the cache is returned and the request tried once more;
  // then quanta::Error names the device, the request and the figures.
  void* Allocate(size_t bytes);
  void Free(void* ptr, size_t bytes);
  // Returns every cached block to the device.
  void Empty();
  MemoryStats Stats() const;
  void ResetPeak();

 private:
  Source source_;
  SizeClass size_class_;
  size_t min_cached_, max_cached_;
  mutable std::mutex mu_;
  std::multimap<size_t, void*> free_;  // size class -> cached block
  MemoryStats stats_;
};

}  // namespace quanta
