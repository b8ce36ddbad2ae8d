#include "threadpool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace nd {

namespace {

thread_local bool t_in_pool = false;

class Pool {
 public:
  explicit Pool(int n) : nthreads_(std::max(1, n)) {
    for (int i = 1; i < nthreads_; ++i) workers_.emplace_back([this] { loop(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
      ++generation_;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  int size() const { return nthreads_; }

  void run(int64_t nchunks, const std::function<void(int64_t)>& chunk) {
    std::lock_guard<std::mutex> serial(run_mu_);  // one parallel region at a time
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = &chunk;
      nchunks_ = nchunks;
      next_.store(0);
      pending_ = static_cast<int>(workers_.size());
      error_ = nullptr;
      ++generation_;
    }
    cv_.notify_all();
    work();
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [this] { return pending_ == 0; });
    job_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void work() {
    bool prev = t_in_pool;
    t_in_pool = true;
    for (;;) {
      int64_t i = next_.fetch_add(1);
      if (i >= nchunks_) break;
      try {
        (*job_)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu_);
        if (!error_) error_ = std::current_exception();
      }
    }
    t_in_pool = prev;
  }
  void loop() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return generation_ != seen; });
        seen = generation_;
        if (stop_) return;
      }
      work();
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (--pending_ == 0) done_cv_.notify_one();
      }
    }
  }

  int nthreads_;
  std::vector<std::thread> workers_;
  std::mutex mu_, run_mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t nchunks_ = 0;
  std::atomic<int64_t> next_{0};
  int pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

int default_threads() {
  if (const char* env = std::getenv("ND_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc ? static_cast<int>(hc) : 1;
}

std::mutex g_pool_mu;
Pool* g_pool = nullptr;
int g_requested = 0;

Pool& pool() {
  std::lock_guard<std::mutex> lk(g_pool_mu);
  int want = g_requested > 0 ? g_requested : default_threads();
  if (!g_pool || g_pool->size() != want) {
    delete g_pool;
    g_pool = new Pool(want);
  }
  return *g_pool;
}

}  // namespace

int num_threads() { return g_requested > 0 ? g_requested : default_threads(); }

void set_num_threads(int n) {
  std::lock_guard<std::mutex> lk(g_pool_mu);
  g_requested = std::max(1, n);
}

void parallel_for(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (end <= begin) return;
  int64_t n = end - begin;
  grain = std::max<int64_t>(1, grain);
  int nt = num_threads();
  if (t_in_pool || nt == 1 || n <= grain) {
    fn(begin, end);
    return;
  }
  // A few chunks per thread balances uneven work without much scheduling overhead.
  int64_t nchunks = std::min<int64_t>((n + grain - 1) / grain, static_cast<int64_t>(nt) * 4);
  int64_t per = (n + nchunks - 1) / nchunks;
  nchunks = (n + per - 1) / per;
  std::function<void(int64_t)> chunk = [&](int64_t c) {
    int64_t lo = begin + c * per, hi = std::min(end, lo + per);
    if (lo < hi) fn(lo, hi);
  };
  pool().run(nchunks, chunk);
}

}  // namespace nd
