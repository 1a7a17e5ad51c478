// The CPU allocator: 64-byte aligned blocks from the C library, with large
// freed blocks kept for reuse (Note [CPU block cache]). Not a general-purpose
// allocator: small blocks go straight to malloc and back.
//
//   BlockCache cache;
//   void* p = cache.Allocate(4 << 20);   // a reused block when one of its class is free
//   cache.Free(p, 4 << 20);              // kept (up to the cap), not unmapped
//   cache.Stats().cached;                // bytes kept
#pragma once

#include <cstddef>
#include <map>
#include <mutex>

#include "core/backend.h"

namespace quanta::cpu {

// Note [CPU block cache]: glibc serves blocks above its mmap threshold with
// mmap and returns them with munmap, so a model whose activations are a few MiB
// each pays a page fault per 4 KiB page on every forward (28% of BERT-base's
// int8 time after a batch of another size, measured with perf). Blocks of
// kMinCached bytes or more are therefore kept on free, by size class (four
// classes per power of two, so at most 25% is wasted), and handed out again;
// at most kMaxCached bytes are kept, and Backend::EmptyCache returns them.
class BlockCache {
 public:
  static constexpr size_t kAlignment = 64;  // one cache line, one AVX-512 vector
  static constexpr size_t kMinCached = size_t{1} << 20;
  static constexpr size_t kMaxCached = size_t{2} << 30;

  ~BlockCache() { Empty(); }
  void* Allocate(size_t bytes);
  void Free(void* ptr, size_t bytes);
  void Empty();
  MemoryStats Stats() const;
  void ResetPeak();
  // The size a request of `bytes` is served with.
  static size_t ClassOf(size_t bytes);

 private:
  mutable std::mutex mu_;
  std::multimap<size_t, void*> free_;  // class size -> block
  MemoryStats stats_;
};

}  // namespace quanta::cpu
