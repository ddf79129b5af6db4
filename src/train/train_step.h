#pragma once
// One optimisation step, as `fm train` takes it and `fm bench` times it: the objective (noise x0 and times drawn, the
// path sampled, the network run under bf16 autocast on CUDA when asked, channels-last where it pays), backward, the
// global gradient norm (and clipping), the non-finite guard, fused AdamW and the EMA. Nothing in it reads a value back
// to the host.
#include <memory>
#include <optional>

#include <torch/torch.h>

#include "nn/velocity_field.h"
#include "train/adamw.h"
#include "train/ema.h"
#include "train/nonfinite_guard.h"
#include "train/objective.h"
#include "train/phema.h"

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

// What fm train and fm bench build alike before their first step: the network and its EMA copy on the device
// (channels-last where it pays, kernels/kernels.h), the EMA, AdamW over the network's parameters, the probability
// path, the objective and the non-finite guard. fm train then loads a checkpoint into them when it resumes.
struct TrainingSetup {
  TrainingSetup(const Config& cfg, const std::vector<int64_t>& sample_shape, const torch::Device& device);

  bool channels_last;
  bool autocast;  // bf16, on CUDA only
  std::shared_ptr<VelocityField> model, ema_model;
  Ema ema;
  PowerEma phema;  // post-hoc EMA profiles, updated beside the EMA (none unless train.ema_snapshot_every > 0)
  std::vector<torch::Tensor> params;
  AdamW optimizer;
  std::unique_ptr<ProbPath> path;
  std::unique_ptr<Objective> objective;
  NonFiniteGuard guard;
  double grad_clip;
};

// How a step is shared by the ranks of a job (dist/): each rank trains its rows of the global batch, the gradients
// are averaged while backward runs, the loss is averaged over the world, and the dropout masks come from a stream of
// (seed, step, rank) (train/forward_rng.h). The default is one process drawing its masks from the default generator.
struct StepParallel {
  dist::World* world = nullptr;
  dist::GradReducer* reducer = nullptr;
  std::optional<uint64_t> forward_rng_seed;
};

class TrainStep {
 public:
  explicit TrainStep(TrainingSetup& parts, StepParallel parallel = {});
  // Optimisation step `step` (0-based) on `batch` at learning rate lr; without lr, AdamW's device learning rate as
  // set_lr left it (the form a CUDA graph captures).
  StepResult operator()(const Batch& batch, int64_t step, std::optional<double> lr);
  // Dropout masks from the default generator from now on: a captured CUDA graph replays with fresh draws from it,
  // where a seed set from the host each step would be frozen into the graph.
  void use_default_generator() { parallel_.forward_rng_seed.reset(); }
  TrainingSetup& parts() { return parts_; }

 private:
  TrainingSetup& parts_;
  StepParallel parallel_;
  RowShard shard_;
};

}  // namespace fm
