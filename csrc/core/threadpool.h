// A fixed pool of worker threads sized to the machine (ND_NUM_THREADS overrides).
// parallel_for splits [begin, end) into chunks run by the pool and the calling thread.
#pragma once
#include <cstdint>
#include <functional>

namespace nd {

int num_threads();
void set_num_threads(int n);  // takes effect for the next parallel_for; n >= 1

// Calls fn(lo, hi) over disjoint chunks covering [begin, end); chunks hold >= grain items.
// Runs inline when the range is small or when called from inside a pool thread.
void parallel_for(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace nd
