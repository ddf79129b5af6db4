#pragma once
// A training run's checkpoint policy, in one place: what a run resumes from (a fresh start, the newest checkpoint
// that verifies, or a given file; the same on every rank), the branch a resume from an older checkpoint abandons, and
// when and how checkpoints are written (every N steps and at the last step, only finite state, rank 0 alone, the
// newest K kept). It writes nothing else into the run directory.
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "dist/world.h"

namespace fm {

// True when every element of every tensor is finite (one host read): the check before a checkpoint is written.
bool all_finite(const std::vector<torch::Tensor>& tensors);

class Checkpointer {
 public:
  // Checkpoints go to run_dir/checkpoints every `every` steps and at the run's last step; the newest `keep_last` stay.
  Checkpointer(const std::string& run_dir, dist::World& world, int64_t every, int64_t keep_last);

  // Chooses what to resume before anything in the run directory is touched: "" (a fresh run; refused when the
  // directory already holds checkpoints), "auto" (the newest checkpoint that verifies; none: a fresh run) or a
  // checkpoint's path. Every rank must find the same one (InputError otherwise: --out is not on a file system every
  // node shares). Returns the opened, verified checkpoint, or nullptr for a fresh run.
  std::unique_ptr<CheckpointReader> choose_resume(const std::string& resume, const torch::Device& device);
  // Continuing from `ck` starts a new branch where the directory holds newer checkpoints: rank 0 moves them aside
  // (checkpoint/checkpoint_dir.h), so that a later --resume auto cannot jump back to them.
  void start_branch(const CheckpointReader& ck);

  // A run that diverged from `step` on: rank 0 moves the checkpoints of that step and later aside
  // (checkpoints/diverged_<time>/), so that --resume auto continues from the newest one before it.
  void set_aside_from(int64_t step);

  bool due(int64_t step, int64_t last_step) const { return step % every_ == 0 || step == last_step; }
  // Writes the checkpoint of `c` at c.step. Every rank first checks that `float_state` (everything the checkpoint
  // stores as floats) is finite, so that all stop alike and no checkpoint holds an inf or NaN; rank 0 writes, then
  // prunes to the newest keep_last.
  void save(const CheckpointContents& c, const std::vector<torch::Tensor>& float_state);
  // The newest checkpoint of this run: the last written or resumed from ("" none).
  const std::string& latest() const { return latest_; }
  int64_t latest_step() const { return latest_step_; }

 private:
  std::string run_dir_, dir_;
  dist::World& world_;
  int64_t every_, keep_last_;
  std::string latest_;
  int64_t latest_step_ = -1;
};

}  // namespace fm
