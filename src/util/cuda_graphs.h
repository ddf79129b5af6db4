#pragma once
// What fm's CUDA graphs (train/train_step_graph.h, sample/graphed_velocity.h) need from LibTorch, where it has it:
// FM_HAVE_CUDA_GRAPHS is defined when the CUDA graph headers are there.
#if __has_include(<ATen/cuda/CUDAGraph.h>) && __has_include(<cuda_runtime_api.h>)
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define FM_HAVE_CUDA_GRAPHS 1

namespace fm {

// `waiter` runs on only after the work queued so far on `first` (an event, no host sync).
inline void wait_for(const c10::cuda::CUDAStream& waiter, const c10::cuda::CUDAStream& first) {
  at::cuda::CUDAEvent done;
  done.record(first);
  done.block(waiter);
}

}  // namespace fm
#endif
