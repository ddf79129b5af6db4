#pragma once
// The non-finite guard (as in EDM's training loop and PyTorch's GradScaler): a step whose loss or gradients are not
// finite is skipped rather than written into the weights. The decision stays on the device, as a float32 flag
// `found_inf` (1 = skip) that the fused optimizer and the EMA read, so the guard costs no host sync per step; the
// counters are read back only at log and checkpoint time, where the loop syncs anyway.
#include <cstdint>
#include <vector>

#include <torch/torch.h>

namespace fm {

class NonFiniteGuard {
 public:
  // max_consecutive: that many skipped steps in a row end the run (see check_consecutive).
  NonFiniteGuard(const torch::Device& device, int64_t max_consecutive);

  // This step's flag: 1 where the loss or the global gradient norm is NaN or infinite, else 0. A NaN or inf in any
  // gradient makes the norm non-finite; so does a norm beyond float32's range (about 1.8e19 for the squares' sum),
  // which no useful step has. Counts the step as skipped or not, on the device.
  torch::Tensor check(const torch::Tensor& loss, const torch::Tensor& grad_norm);

  // Skipped steps since the last call (a host read).
  int64_t take_interval_skips();
  // Throws std::runtime_error saying "non-finite" and naming the steps when the last max_consecutive or more steps,
  // ending at `step`, were all skipped (a host read).
  void check_consecutive(int64_t step) const;

 private:
  int64_t max_consecutive_;
  torch::Tensor interval_, consecutive_;  // int64 device counters
};

}  // namespace fm
