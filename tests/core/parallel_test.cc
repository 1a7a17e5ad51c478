// The shared thread pool: every item runs once, exceptions reach the caller,
// and resizing between runs is safe.
#include "core/parallel.h"

#include <atomic>
#include <vector>

#include "core/backend.h"
#include "core/error.h"
#include "gtest/gtest.h"

namespace quanta {
namespace {

int64_t ParallelSum(int64_t n) {
  std::atomic<int64_t> sum{0};
  ParallelFor(0, n, 1, [&](int64_t b, int64_t e) {
    int64_t local = 0;
    for (int64_t i = b; i < e; ++i) local += i;
    sum += local;
  });
  return sum.load();
}

TEST(Parallel, EveryItemOnceAcrossResizes) {
  for (int round = 0; round < 20; ++round) {
    SetNumThreads(1 + round % 3);
    EXPECT_EQ(GetNumThreads(), 1 + round % 3);
    EXPECT_EQ(ParallelSum(1000), 999 * 1000 / 2) << "round " << round;
  }
  SetNumThreads(2);
}

TEST(Parallel, ChunksRespectGrainAndRange) {
  SetNumThreads(2);
  std::vector<int> hits(100, 0);
  ParallelFor(10, 100, 30, [&](int64_t b, int64_t e) {
    EXPECT_GE(b, 10);
    EXPECT_LE(e, 100);
    for (int64_t i = b; i < e; ++i) ++hits[i];
  });
  for (int i = 0; i < 100; ++i) EXPECT_EQ(hits[i], i < 10 ? 0 : 1) << i;
}

TEST(Parallel, ExceptionsReachTheCaller) {
  SetNumThreads(2);
  EXPECT_THROW(ParallelFor(0, 1000, 1,
                           [&](int64_t b, int64_t) {
                             if (b > 0) throw Error("chunk failed");
                           }),
               Error);
  EXPECT_EQ(ParallelSum(100), 4950);  // the pool still works
  EXPECT_THROW(SetNumThreads(0), Error);
}

}  // namespace
}  // namespace quanta
