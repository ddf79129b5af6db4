#pragma once
// The training step replayed as one CUDA graph (train.cuda_graph): after a few eager warm-up steps (cuDNN's
// autotuning and the allocator settle), the whole TrainStep (noise and times drawn, path, forward, backward, gradient
// norm, guard, fused AdamW, EMA) is captured once on a side stream and then replayed: one launch per step instead of
// about a thousand, so the host no longer paces a small network. Each step copies its batch into the static input
// tensors and its learning rate into AdamW's device lr before the replay; the default CUDA generator is registered
// with the graph, so every replay draws fresh noise, times and dropout masks.
//
// Where capture is impossible (not CUDA, an objective that needs the host each step, a LibTorch without CUDA graphs,
// or a capture that fails) every step runs eagerly and one log line says why.
#include <memory>
#include <string>

#include "train/train_step.h"

namespace fm {

class GraphedTrainStep {
 public:
  // `enabled`: train.cuda_graph.
  GraphedTrainStep(TrainStep& step, const torch::Device& device, bool enabled);
  ~GraphedTrainStep();
  // Step `step` (0-based). The results live in the graph's static tensors on the graphed path: read them before the
  // next call.
  StepResult operator()(const Batch& batch, int64_t step, double lr);
  bool graphed() const;  // true once a capture has succeeded

  static constexpr int kWarmupSteps = 3;

 private:
  struct Impl;
  TrainStep& step_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fm
