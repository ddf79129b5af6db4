#pragma once
// What a training run reports, every train.log_every steps and at its last step: one line of metrics.jsonl, the same
// numbers as TensorBoard scalars, and the progress line on stderr (rank 0 writes; train/metrics_log.h and
// train/tensorboard_log.h). It owns the interval's state: the losses of the steps that were not skipped, the time
// spent in the interval less what was spent writing checkpoints and figures, the gradient all-reduce's wait that
// backward did not hide, and the run's count of skipped steps (carried over a resume from the kept metrics lines).
// Each report also checks that every rank holds the same weights.
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "config/config.h"
#include "dist/world.h"
#include "train/metrics_log.h"
#include "train/nonfinite_guard.h"
#include "train/tensorboard_log.h"
#include "train/train_step.h"
#include "util/progress.h"

namespace fm {

class Reporter {
 public:
  // A run from `start_step` (resumed: the checkpoint's step, whose metrics.jsonl lines up to it are kept).
  Reporter(const std::string& run_dir, dist::World& world, const torch::Device& device, const TrainConfig& train,
           int64_t start_step, bool resumed);

  // After each step; reads nothing back to the host.
  void add(const StepResult& r, double lr, double exposed_sync_wait_s);
  bool due(int64_t step) const { return step % log_every_ == 0 || step == total_steps_; }
  // The interval ending at `step`: one host read, then rank 0 writes the line. Throws when the ranks' weights differ
  // (a nondeterministic reduction or a bug).
  void report(int64_t step, const std::vector<torch::Tensor>& params, NonFiniteGuard& guard);
  // Runs f with its time left out of the interval's throughput (checkpoint writes, sample grids).
  template <class F>
  void off_the_clock(F&& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    pause_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  // A PNG as a TensorBoard image (rank 0, when TensorBoard is on).
  void image(const std::string& tag, const std::string& png_path, int64_t step);
  double last_loss() const { return last_loss_; }

 private:
  dist::World& world_;
  torch::Device device_;
  int64_t log_every_, total_steps_, batch_;
  std::optional<MetricsLog> metrics_;
  std::optional<TensorBoardLog> tensorboard_;
  std::optional<Progress> progress_;
  // The interval since the last report.
  torch::Tensor loss_sum_, grad_norm_;
  double lr_ = 0.0, sync_wait_s_ = 0.0, pause_s_ = 0.0;
  int64_t steps_ = 0;
  int64_t skipped_total_ = 0;  // over the whole run, resumed parts included
  std::chrono::steady_clock::time_point t0_;
  double last_loss_ = 0.0;
};

}  // namespace fm
