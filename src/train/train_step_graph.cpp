#include "train/train_step_graph.h"

#include <spdlog/spdlog.h>


#include "util/cuda_graphs.h"

namespace fm {

struct GraphedTrainStep::Impl {
  bool active = false;  // still aiming for (or using) the graph
  int64_t eager_steps = 0;
#ifdef FM_HAVE_CUDA_GRAPHS
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  Batch input;      // static: each step's batch is copied in
  StepResult out;   // static: written by every replay
#endif
};

GraphedTrainStep::GraphedTrainStep(TrainStep& step, const torch::Device& device, bool enabled)
    : step_(step), impl_(std::make_unique<Impl>()) {
  if (!enabled) return;
  if (!device.is_cuda()) {
    spdlog::info("train.cuda_graph: {} is not a CUDA device; the step runs eagerly", device.str());
    return;
  }
#ifndef FM_HAVE_CUDA_GRAPHS
  spdlog::warn("train.cuda_graph: this fm was built without CUDA graph support; the step runs eagerly");
  return;
#endif
  if (step.parts().model->has_second_time()) {
    spdlog::warn("train.cuda_graph: the MeanFlow step (a forward-mode Jacobian-vector product through the network) is "
                 "not captured; the step runs eagerly");
    return;
  }
  if (step.parts().objective->needs_host()) {
    spdlog::warn("train.cuda_graph: the objective pairs the batch with host work or data-dependent sampling "
                 "(path.coupling), which a CUDA graph cannot capture; the step runs eagerly");
    return;
  }
  impl_->active = true;
  // A seed set from the host each step would be frozen into the graph; the registered default generator gives every
  // replay fresh dropout masks instead (a single process has no other rank whose masks must differ).
  step.use_default_generator();
}

GraphedTrainStep::~GraphedTrainStep() = default;

bool GraphedTrainStep::graphed() const {
#ifdef FM_HAVE_CUDA_GRAPHS
  return impl_->graph != nullptr;
#else
  return false;
#endif
}

StepResult GraphedTrainStep::operator()(const Batch& batch, int64_t step, double lr) {
  auto& s = *impl_;
#ifdef FM_HAVE_CUDA_GRAPHS
  if (s.graph) {
    s.input.x.copy_(batch.x, /*non_blocking=*/true);
    if (s.input.labels.defined()) s.input.labels.copy_(batch.labels, true);
    if (s.input.x0.defined()) s.input.x0.copy_(batch.x0, true);
    step_.parts().optimizer.set_lr(lr);
    s.graph->replay();
    return s.out;
  }
  if (s.active && s.eager_steps >= kWarmupSteps) {
    // Capture on a side stream (CUDA graphs cannot capture the legacy default stream), with the step's inputs in
    // tensors that outlive it. The captured work is only recorded, so the step itself is the first replay.
    s.input.x = batch.x.clone();
    if (batch.labels.defined()) s.input.labels = batch.labels.clone();
    if (batch.x0.defined()) s.input.x0 = batch.x0.clone();
    step_.parts().optimizer.set_lr(lr);
    auto graph = std::make_unique<at::cuda::CUDAGraph>();
    const std::string failure = capture(
        *graph, batch.x.device().index(), [&] { s.out = step_(s.input, step, std::nullopt); },
        /*register_generator=*/true);
    if (!failure.empty()) {
      s.active = false;
      spdlog::warn("train.cuda_graph: capturing the step failed, training eagerly: {}", failure);
      return step_(batch, step, lr);
    }
    s.graph = std::move(graph);
    spdlog::info("train.cuda_graph: the training step is captured after {} eager steps and replayed from now on",
                 s.eager_steps);
    s.graph->replay();
    return s.out;
  }
  if (s.active) {
    // Warm-up steps on a side stream, as capture will run there: cuDNN picks its algorithms and the allocator its
    // blocks before anything is recorded.
    auto side = c10::cuda::getStreamFromPool(false, batch.x.device().index());
    auto main = c10::cuda::getCurrentCUDAStream(batch.x.device().index());
    wait_for(side, main);
    StepResult r;
    {
      c10::cuda::CUDAStreamGuard guard(side);
      r = step_(batch, step, lr);
    }
    wait_for(main, side);
    ++s.eager_steps;
    return r;
  }
#endif
  return step_(batch, step, lr);
}

}  // namespace fm
