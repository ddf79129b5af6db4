#pragma once
// What fm's CUDA graphs (train/train_step_graph.h, sample/graphed_velocity.h) need from LibTorch, where it has it:
// FM_HAVE_CUDA_GRAPHS is defined when the CUDA graph headers are there.
#include <functional>
#include <string>

#if __has_include(<ATen/cuda/CUDAGraph.h>) && __has_include(<cuda_runtime_api.h>)
#include <ATen/autocast_mode.h>
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#define FM_HAVE_CUDA_GRAPHS 1

namespace fm {

// `waiter` runs on only after the work queued so far on `first` (an event, no host sync).
inline void wait_for(const c10::cuda::CUDAStream& waiter, const c10::cuda::CUDAStream& first) {
  at::cuda::CUDAEvent done;
  done.record(first);
  done.block(waiter);
}

// Captures `work` into `graph` on a side stream of device `index` (CUDA graphs cannot capture the legacy default
// stream), with autocast's cache of bf16 weight copies off (they would be made and dropped inside the capture) and,
// when asked, the default CUDA generator registered so that replays draw fresh numbers. A capture that fails, in
// `work` or at its end, is ended and discarded whatever state it was left in, and the device synchronised, so that
// the caller can go on eagerly. Returns the failure's message, or "" when `graph` holds the capture.
inline std::string capture(at::cuda::CUDAGraph& graph, c10::DeviceIndex index, const std::function<void()>& work,
                           bool register_generator) {
  auto side = c10::cuda::getStreamFromPool(false, index);
  c10::cuda::getCurrentCUDAStream(index).synchronize();
  const bool cache = at::autocast::is_autocast_cache_enabled();
  at::autocast::set_autocast_cache_enabled(false);
  std::string failure;
  {
    c10::cuda::CUDAStreamGuard guard(side);
    try {
      if (register_generator) graph.register_generator_state(at::cuda::detail::getDefaultCUDAGenerator(index));
      graph.capture_begin();
      work();
      graph.capture_end();
    } catch (const std::exception& e) {
      failure = e.what();
    }
    if (!failure.empty()) {
      // capture_end() may not have run, or may have thrown after a failure inside the capture: end the stream's
      // capture here, or every later call on it would fail too.
      cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
      if (cudaStreamIsCapturing(side.stream(), &status) == cudaSuccess && status != cudaStreamCaptureStatusNone) {
        cudaGraph_t partial = nullptr;
        cudaStreamEndCapture(side.stream(), &partial);
        if (partial) cudaGraphDestroy(partial);
      }
      cudaGetLastError();  // the capture's error is reported above; it must not surface at the next CUDA call
    }
  }
  at::autocast::set_autocast_cache_enabled(cache);
  if (failure.empty())
    side.synchronize();
  else
    c10::cuda::device_synchronize();
  return failure;
}

}  // namespace fm
#endif
