#pragma once
// The non-finite guard (as in EDM's training loop and PyTorch's GradScaler): a step whose loss or gradients are not
// finite is skipped rather than written into the weights. The decision stays on the device, as a float32 flag
// `found_inf` (1 = skip) that the fused optimizer and the EMA read, so the guard costs no host sync per step. It also
// keeps, on the device, the run of skipped steps going on now and the longest one since the last host read, so that a
// run of skips is never missed because a taken step ended it between two reads.
#include <cstdint>
#include <optional>

#include <torch/torch.h>

namespace fm {

// A run of consecutive skipped steps, first to last (the global step numbers, 1-based as the loop counts them).
struct SkippedRun {
  int64_t first = 0, last = 0;
  int64_t length() const { return last - first + 1; }
};

class NonFiniteGuard {
 public:
  // max_consecutive: that many skipped steps in a row end the run.
  NonFiniteGuard(const torch::Device& device, int64_t max_consecutive);

  // This step's flag: 1 where the loss or the global gradient norm is NaN or infinite, else 0. A NaN or inf in any
  // gradient makes the norm non-finite; so does a norm beyond float32's range (about 1.8e19 for the squares' sum),
  // which no useful step has. Counts the step as skipped or not, on the device.
  torch::Tensor check(const torch::Tensor& loss, const torch::Tensor& grad_norm);

  // Skipped steps since the last call (a host read).
  int64_t take_interval_skips();

  struct Reading {
    int64_t current = 0;               // skipped steps in a row ending at this step (0: the step was taken)
    std::optional<SkippedRun> too_long;  // a run of max_consecutive or more since the last reading
  };
  // Reads the streaks at `step` (the steps taken so far; a host read) and starts the next interval.
  Reading read(int64_t step);
  // Whether a read at `step` is needed to stop exactly when a run reaches max_consecutive: the run under way at the
  // last read can reach it no earlier than max_consecutive - its length steps later.
  bool due(int64_t step) const { return step >= next_read_; }
  int64_t max_consecutive() const { return max_consecutive_; }

 private:
  int64_t max_consecutive_;
  int64_t next_read_;
  // int64 device counters: skips this interval, steps checked, the current run of skips, and the longest run since
  // the last read with the count of steps checked at its end.
  torch::Tensor interval_, checked_, current_, longest_, longest_end_;
};

}  // namespace fm
