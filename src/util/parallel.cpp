#include "util/parallel.h"

#include <ATen/Parallel.h>

#include <atomic>
#include <cstdint>

namespace fm {

int kernel_threads() {
  const int64_t n = at::get_num_threads();
  // One item per thread, grain 1: each thread that takes part marks its id.
  std::atomic<uint64_t> seen{0};
  std::atomic<int> beyond{0};  // ids past 63, counted rather than marked
  at::parallel_for(0, n, 1, [&](int64_t, int64_t) {
    const int id = at::get_thread_num();
    if (id < 64)
      seen.fetch_or(uint64_t{1} << id);
    else
      beyond.fetch_add(1);
  });
  return __builtin_popcountll(seen.load()) + beyond.load();
}

}  // namespace fm
