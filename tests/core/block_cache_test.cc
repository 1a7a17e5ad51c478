// core's BlockCache over a counting fake device: reuse by size class, the
// minimum and the cap on cached bytes, the figures, and out-of-memory (the cache
// is returned and the request retried once, then an error naming the device).
#include "core/block_cache.h"

#include <cstdlib>
#include <map>

#include "core/error.h"
#include "gtest/gtest.h"

namespace quanta {
namespace {

size_t Kib(size_t bytes) { return (bytes + 1023) / 1024 * 1024; }

struct FakeDevice {
  std::map<void*, size_t> live;  // block -> bytes
  int allocations = 0, releases = 0, syncs = 0;
  size_t limit = SIZE_MAX, used = 0;
  BlockCache::Source Source() {
    return {.allocate =
                [this](size_t n) -> void* {
                  if (used + n > limit) return nullptr;
                  used += n;
                  ++allocations;
                  void* p = std::malloc(n);
                  live[p] = n;
                  return p;
                },
            .release =
                [this](void* p) {
                  ++releases;
                  used -= live.at(p);
                  live.erase(p);
                  std::free(p);
                },
            .before_release = [this] { ++syncs; },
            .name = "fake:0"};
  }
};

TEST(BlockCache, ReusesBlocksOfAClassWithinTheLimits) {
  FakeDevice dev;
  {
    BlockCache cache(dev.Source(), &Kib, /*min_cached=*/2048, /*max_cached=*/8192);
    void* a = cache.Allocate(3000);  // class 3072
    cache.Free(a, 3000);
    EXPECT_EQ(cache.Stats().cached, 3072);
    void* b = cache.Allocate(2900);  // the same class: the same block, no device call
    EXPECT_EQ(b, a);
    EXPECT_EQ(dev.allocations, 1);
    void* small = cache.Allocate(100);  // below min_cached: straight back on free
    cache.Free(small, 100);
    EXPECT_EQ(dev.releases, 1);
    MemoryStats s = cache.Stats();
    EXPECT_EQ(s.in_use, 3072);
    EXPECT_EQ(s.peak, 3072 + 1024);
    EXPECT_EQ(s.device_allocations, 2);
    void* big = cache.Allocate(9000);  // over the cap: not kept
    cache.Free(big, 9000);
    EXPECT_EQ(dev.releases, 2);
    cache.Free(b, 2900);
    cache.Empty();
    EXPECT_EQ(cache.Stats().cached, 0);
    EXPECT_EQ(dev.syncs, 1);
    EXPECT_TRUE(dev.live.empty());
  }
}

TEST(BlockCache, OutOfMemoryReturnsTheCacheThenNamesTheDevice) {
  FakeDevice dev;
  dev.limit = 4096;
  BlockCache cache(dev.Source(), &Kib);
  void* a = cache.Allocate(3072);
  cache.Free(a, 3072);          // cached: the device is 3 KiB full
  void* b = cache.Allocate(2048);  // misses, fails, empties the cache, succeeds
  EXPECT_NE(b, nullptr);
  EXPECT_EQ(dev.releases, 1);
  try {
    cache.Allocate(4096);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("fake:0: out of memory allocating 4096 bytes"), std::string::npos) << e.what();
  }
  EXPECT_EQ(cache.Stats().in_use, 2048);
  cache.Free(b, 2048);
}

}  // namespace
}  // namespace quanta
