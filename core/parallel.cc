// A fixed pool of worker threads fed one ParallelFor at a time. Deliberately
// simple: no work stealing, no futures; ParallelFor is the only entry point.
#include "core/parallel.h"

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace quanta {
namespace {

thread_local bool in_parallel_region = false;

class ThreadPool {
 public:
  explicit ThreadPool(int threads) { Resize(threads); }
  ~ThreadPool() { Stop(); }

  int threads() const { return threads_; }

  void Resize(int threads) {
    std::lock_guard<std::mutex> run_lock(run_mu_);
    Stop();
    threads_ = std::max(1, threads);
    stop_ = false;
    // Workers start from the current generation: a new worker must wait for the
    // next Run, not replay the last one (whose task is gone).
    for (int i = 1; i < threads_; ++i) {
      workers_.emplace_back([this, i, generation = generation_] { Work(i, generation); });
    }
  }

  // Runs task(i) for i in [0, n) with n <= threads(); task 0 on the caller.
  void Run(int n, const std::function<void(int)>& task) {
    std::lock_guard<std::mutex> run_lock(run_mu_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      task_ = &task;
      tasks_ = n;
      pending_ = n - 1;
      error_ = nullptr;
      ++generation_;
    }
    cv_.notify_all();
    RunOne(task, 0);
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return pending_ == 0; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void RunOne(const std::function<void(int)>& task, int i) {
    in_parallel_region = true;
    try {
      task(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
    }
    in_parallel_region = false;
  }

  void Work(int index, uint64_t seen) {
    while (true) {
      const std::function<void(int)>* task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        if (index >= tasks_) continue;
        task = task_;
      }
      RunOne(*task, index);
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }

  void Stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  std::mutex run_mu_;  // one Run (or Resize) at a time
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* task_ = nullptr;
  int threads_ = 1, tasks_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

ThreadPool& Pool() {
  static ThreadPool* pool = new ThreadPool(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  return *pool;
}

}  // namespace

void ParallelFor(int64_t begin, int64_t end, int64_t grain,
                 const std::function<void(int64_t, int64_t)>& fn) {
  int64_t n = end - begin;
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t chunks = std::min<int64_t>((n + grain - 1) / grain, Pool().threads());
  if (chunks <= 1 || in_parallel_region) {
    fn(begin, end);
    return;
  }
  int64_t per = (n + chunks - 1) / chunks;
  Pool().Run(static_cast<int>(chunks), [&](int i) {
    int64_t b = begin + i * per;
    int64_t e = std::min(end, b + per);
    if (b < e) fn(b, e);
  });
}

namespace internal {
void SetPoolThreads(int n) { Pool().Resize(n); }
int PoolThreads() { return Pool().threads(); }
}  // namespace internal

}  // namespace quanta
