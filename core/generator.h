// Seedable random numbers. A Generator is a Philox4x32-10 key (the seed) and a
// counter offset; each random op consumes one counter per element, so the same
// seed gives the same tensor on every backend and thread count.
//
//   Generator gen(42);
//   Tensor a = Uniform({3, 3}, 0, 1, &gen);
//   ManualSeed(7);                         // the default generator
//   Tensor n = Normal({100}, 0, 1);        // uses DefaultGenerator()
#pragma once

#include <cmath>
#include <cstdint>

#include "core/dtype.h"  // QUANTA_HOST_DEVICE

namespace quanta {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  void ManualSeed(uint64_t seed) { seed_ = seed, offset_ = 0; }
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  // Reserves n counters and returns the first.
  uint64_t Advance(uint64_t n) {
    uint64_t first = offset_;
    offset_ += n;
    return first;
  }

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

Generator& DefaultGenerator();
void ManualSeed(uint64_t seed);

// Philox4x32-10 (Salmon et al., SC 2011): four 32-bit outputs for one 64-bit
// counter under a 64-bit key.
struct PhiloxOut {
  uint32_t v[4];
};
inline QUANTA_HOST_DEVICE PhiloxOut Philox(uint64_t key, uint64_t counter) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return {{c0, c1, c2, c3}};
}

// The i-th uniform and normal values of a stream: element i uses counter offset+i.
inline QUANTA_HOST_DEVICE double PhiloxUniform(uint64_t seed, uint64_t counter) {
  PhiloxOut r = Philox(seed, counter);
  uint64_t bits53 = (static_cast<uint64_t>(r.v[0]) << 21) ^ (r.v[1] >> 11);
  return static_cast<double>(bits53 & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}
inline QUANTA_HOST_DEVICE double PhiloxNormal(uint64_t seed, uint64_t counter) {
  PhiloxOut r = Philox(seed, counter);
  // Box-Muller; u1 in (0, 1] so log never sees 0.
  double u1 = (static_cast<double>(r.v[0]) + 1.0) * (1.0 / 4294967296.0);
  double u2 = static_cast<double>(r.v[1]) * (1.0 / 4294967296.0);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

}  // namespace quanta
