// ParallelFor on OpenMP's thread team. Note [One thread pool]: oneDNN (Debian's
// build) runs on libgomp; a second pool of our own would fight its spinning
// threads for the same cores (measured: ResNet-20 training at 2 threads ran
// slower than at 1). Sharing libgomp's team keeps one thread per core.
#include "core/parallel.h"

#include <omp.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>

namespace quanta {
namespace {

thread_local bool in_parallel_region = false;
int pool_threads = std::max(1, omp_get_max_threads());

// Note [Signals stay off the pool]
// oneDNN before 3.11 (Debian ships 2.6) points the stack pointer at a heap
// workspace while its JIT f32 GEMM kernels run (the AVX2 and AVX-512 sgemm
// behind matmul's "gemm:jit" and the GEMM-based convolutions;
// uxlfoundation/oneDNN issue 4845, fixed by pull request 4855). A signal
// handler that runs meanwhile on that thread writes its frame below the stack
// pointer, into the heap: Python's Ctrl-C handler, a profiler's SIGPROF, any
// handler without an alternate stack. Measured on a Zen 3 EPYC with 2.6.3: a
// Python training loop interrupted by Ctrl-C crashed 12 times in 100
// ("corrupted size vs. prev_size", SIGSEGV in the primitive cache); a C++ loop
// of 512x256x512 matmuls with SIGUSR1 every 200 us within seconds.
// So those kernels run with asynchronous signals held (RunsGemm in
// backends/cpu/onednn.cc picks the primitives): the caller holds them for the
// guard's life (two rt_sigprocmask calls per GEMM-based call), and the pool's
// workers, which run the same kernels, hold them always, so that the kernel
// delivers a process-directed signal to a thread outside the kernels or keeps it
// pending until the caller's guard ends. A worker created later inherits its
// mask from the thread that starts the team: held when that thread is inside a
// guard, and held on the worker's first ParallelFor chunk otherwise; after
// SetNumThreads (libgomp ends surplus workers when a team shrinks) the next
// guard has the whole team hold them again. Not covered: a pool thread that
// other OpenMP code in the process (not Quanta) created and oneDNN later uses.
// A profiler's SIGPROF that lands in a GEMM is delivered when the kernel
// returns, so the GEMM's time is charged to the code right after it.
const sigset_t& AsynchronousSignals() {
  static const sigset_t set = [] {
    sigset_t s;
    sigfillset(&s);
    for (int fault : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS}) sigdelset(&s, fault);
    return s;
  }();
  return set;
}
thread_local bool worker_holds_signals = false;
void WorkerHoldsSignals() {
  if (worker_holds_signals || omp_get_thread_num() == 0) return;
  pthread_sigmask(SIG_BLOCK, &AsynchronousSignals(), nullptr);
  worker_holds_signals = true;
}
// The largest team whose workers were made to hold signals since the thread
// count last changed, per calling thread (each thread that starts teams has a
// pool of its own in libgomp).
std::atomic<int64_t> thread_count_changes{0};
thread_local int team_holding_signals = 1;
thread_local int64_t team_holding_signals_since = 0;

}  // namespace

void ParallelFor(int64_t begin, int64_t end, int64_t grain,
                 const std::function<void(int64_t, int64_t)>& fn) {
  int64_t n = end - begin;
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t chunks = std::min<int64_t>((n + grain - 1) / grain, pool_threads);
  if (chunks <= 1 || in_parallel_region) {
    fn(begin, end);
    return;
  }
  int64_t per = (n + chunks - 1) / chunks;
  std::exception_ptr error;
  std::mutex error_mu;
#pragma omp parallel num_threads(static_cast<int>(chunks))
  {
    in_parallel_region = true;
    WorkerHoldsSignals();
    int64_t i = omp_get_thread_num();
    int64_t b = begin + i * per;
    int64_t e = std::min(end, b + per);
    // Exceptions may not leave an OpenMP region: keep the first, rethrow after.
    try {
      if (b < e) fn(b, e);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mu);
      if (!error) error = std::current_exception();
    }
    in_parallel_region = false;
  }
  if (error) std::rethrow_exception(error);
}

SignalsDeferred::SignalsDeferred() {
  pthread_sigmask(SIG_BLOCK, &AsynchronousSignals(), &saved_);
  const int team = omp_get_max_threads();
  const int64_t since = thread_count_changes.load(std::memory_order_relaxed);
  if ((team > team_holding_signals || since != team_holding_signals_since) && !omp_in_parallel()) {
#pragma omp parallel num_threads(team)
    WorkerHoldsSignals();
    team_holding_signals = team;
    team_holding_signals_since = since;
  }
}

SignalsDeferred::~SignalsDeferred() { pthread_sigmask(SIG_SETMASK, &saved_, nullptr); }

namespace internal {
void SetPoolThreads(int n) {
  thread_count_changes.fetch_add(1, std::memory_order_relaxed);
  pool_threads = std::max(1, n);
  omp_set_num_threads(pool_threads);
}
int PoolThreads() { return pool_threads; }
}  // namespace internal

}  // namespace quanta
