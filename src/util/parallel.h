#pragma once
// How many threads fm's own CPU kernels get. They split their work with at::parallel_for, a header template: under
// LibTorch's OpenMP backend it only starts threads in files compiled with OpenMP, which CMakeLists.txt arranges
// where it can (GCC; FM_PARALLEL_KERNELS).

namespace fm {

// The threads that at::parallel_for in fm's translation units actually runs on now: at::get_num_threads() in a build
// with parallel kernels, 1 in one without (a clang build against an OpenMP LibTorch).
int kernel_threads();

}  // namespace fm
