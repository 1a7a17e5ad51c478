// The shared thread pool that hand-written CPU loops run on: OpenMP's team, the
// same threads oneDNN uses (Note [One thread pool] in parallel.cc).
// SetNumThreads in core/backend.h sets it.
//
//   ParallelFor(0, n, /*grain=*/4096, [&](int64_t begin, int64_t end) {
//     for (int64_t i = begin; i < end; ++i) y[i] = x[i] + 1;
//   });
#pragma once

#include <signal.h>

#include <cstdint>
#include <functional>

namespace quanta {

// Splits [begin, end) into at most GetNumThreads() chunks of at least `grain`
// items and runs fn(chunk_begin, chunk_end) on the pool; returns when all are done.
// The first exception thrown by any chunk is rethrown here. Nested calls run inline.
void ParallelFor(int64_t begin, int64_t end, int64_t grain,
                 const std::function<void(int64_t, int64_t)>& fn);

// Note [Signals stay off the pool]: while alive, the calling thread's
// asynchronous signals (SIGINT, SIGTERM, SIGUSR1, SIGPROF, ...; not the faults
// SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS) are held, and the
// pool's worker threads hold them for good; a signal that arrives meanwhile is
// delivered when the guard ends, on the caller's own stack. Wraps code that
// must not be interrupted by a signal handler (oneDNN's GEMM kernels, see
// backends/cpu/onednn.cc). Inside a parallel region it holds the calling
// thread's signals only.
class SignalsDeferred {
 public:
  SignalsDeferred();
  ~SignalsDeferred();
  SignalsDeferred(const SignalsDeferred&) = delete;
  SignalsDeferred& operator=(const SignalsDeferred&) = delete;

 private:
  sigset_t saved_;
};

namespace internal {
void SetPoolThreads(int n);
int PoolThreads();
}  // namespace internal

}  // namespace quanta
