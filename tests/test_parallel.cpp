// fm's own CPU kernels (GroupNorm + SiLU, the Winograd transforms) split their work with at::parallel_for; under
// LibTorch's OpenMP backend that needs fm's files compiled with OpenMP, which CMakeLists.txt arranges (GCC).
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "kernels/kernels.h"

namespace fm {
namespace {

TEST(Parallel, KernelsRunOnTheThreadsLibTorchIsGiven) {
  const int threads = torch::get_num_threads();
  torch::set_num_threads(2);
  const int two = kernels::kernel_threads();
  torch::set_num_threads(1);
  const int one = kernels::kernel_threads();
  torch::set_num_threads(threads);
#ifndef FM_CPU_KERNELS
  EXPECT_EQ(two, 0) << "a build without fm's CPU kernels has no kernel threads";
  EXPECT_EQ(one, 0);
  return;
#endif
  EXPECT_EQ(one, 1);
#ifdef FM_PARALLEL_KERNELS
  EXPECT_EQ(two, 2) << "at::parallel_for in fm's files ran on " << two << " thread(s) of 2";
#else
  EXPECT_EQ(two, 1) << "a build without parallel kernels (CMakeLists.txt warned) that still ran on " << two;
#endif
}

}  // namespace
}  // namespace fm
