// ParallelFor on OpenMP's thread team. Note [One thread pool]: oneDNN (Debian's
// build) runs on libgomp; a second pool of our own would fight its spinning
// threads for the same cores (measured: ResNet-20 training at 2 threads ran
// slower than at 1). Sharing libgomp's team keeps one thread per core.
#include "core/parallel.h"

#include <omp.h>

#include <algorithm>
#include <exception>
#include <mutex>

namespace quanta {
namespace {

thread_local bool in_parallel_region = false;
int pool_threads = std::max(1, omp_get_max_threads());

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

namespace internal {
void SetPoolThreads(int n) {
  pool_threads = std::max(1, n);
  omp_set_num_threads(pool_threads);
}
int PoolThreads() { return pool_threads; }
}  // namespace internal

}  // namespace quanta
