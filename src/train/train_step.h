#pragma once
// One optimisation step of conditional flow matching, as `fm train` takes it and `fm bench` times it: the objective
// (noise x0 and times drawn, the path sampled, the network run under bf16 autocast on CUDA when asked, channels-last
// where it pays), backward, the global gradient norm (and clipping), the non-finite guard, fused AdamW and the EMA. Nothing
// in it reads a value back to the host.
#include <optional>

#include <torch/torch.h>

#include "nn/velocity_field.h"
#include "train/adamw.h"
#include "train/cfm_objective.h"
#include "train/ema.h"
#include "train/nonfinite_guard.h"

namespace fm::dist {
class GradReducer;
class World;
}  // namespace fm::dist

namespace fm {

struct StepResult {
  torch::Tensor loss;       // float32 scalar on the device
  torch::Tensor grad_norm;  // before clipping
  torch::Tensor found_inf;  // 1: the step was skipped (non-finite loss or gradient norm)
};

// The forward pass's own random stream (train/forward_rng.h), drawn from (seed, step, rank).
struct ForwardRngSeed {
  uint64_t seed = 0;
  int rank = 0;
};

struct TrainStep {
  VelocityField& model;
  const CfmObjective& objective;
  AdamW& optimizer;
  Ema& ema;
  NonFiniteGuard& guard;
  std::vector<torch::Tensor> params;
  double grad_clip = 0.0;
  bool autocast = false;       // bf16 autocast of the forward pass (CUDA only; weights and optimizer stay fp32)
  bool channels_last = false;  // feed the network NHWC activations (its 4-D weights should be NHWC too)
  // Data parallelism (dist/): the rows of the global batch this rank trains on, the gradient averaging that overlaps
  // backward, and the world the loss is averaged over. The defaults are one process.
  RowShard shard{};
  dist::GradReducer* reducer = nullptr;
  dist::World* world = nullptr;
  // Dropout masks from a stream of (seed, step, rank) rather than the training stream; unset: the default generator.
  std::optional<ForwardRngSeed> forward_rng{};
  int64_t step = 0;  // the step about to be taken, for forward_rng

  StepResult operator()(const Batch& batch, double lr) { return run(batch, lr); }
  // Without lr: AdamW's device learning rate as set_lr left it (the form a CUDA graph captures).
  StepResult run(const Batch& batch, std::optional<double> lr);
};

// What fm train and fm bench build alike before their first step: the network and its EMA copy on the device
// (channels-last where it pays, nn/memory_format.h), the EMA, AdamW over the network's parameters, the probability
// path, the CFM objective and the non-finite guard. fm train then loads a checkpoint into them when it resumes.
struct TrainingSetup {
  TrainingSetup(const Config& cfg, const std::vector<int64_t>& sample_shape, const torch::Device& device);
  // The eager step over these parts, for one process; the caller sets data parallelism and the forward stream.
  TrainStep step();

  bool channels_last;
  bool autocast;  // bf16, on CUDA only
  std::shared_ptr<VelocityField> model, ema_model;
  Ema ema;
  std::vector<torch::Tensor> params;
  AdamW optimizer;
  std::unique_ptr<ProbPath> path;
  CfmObjective objective;
  NonFiniteGuard guard;
  double grad_clip;
};

}  // namespace fm
