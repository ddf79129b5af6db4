#include "train/nonfinite_guard.h"

#include <stdexcept>
#include <string>

namespace fm {

NonFiniteGuard::NonFiniteGuard(const torch::Device& device, int64_t max_consecutive)
    : max_consecutive_(max_consecutive),
      interval_(torch::zeros({}, torch::TensorOptions().dtype(torch::kLong).device(device))),
      consecutive_(torch::zeros({}, torch::TensorOptions().dtype(torch::kLong).device(device))) {}

torch::Tensor NonFiniteGuard::check(const torch::Tensor& loss, const torch::Tensor& grad_norm) {
  torch::NoGradGuard ng;
  auto bad = torch::isfinite(loss.detach()).logical_and(torch::isfinite(grad_norm)).logical_not();
  auto skip = bad.to(torch::kLong);
  interval_.add_(skip);
  consecutive_.add_(1).mul_(skip);  // a finite step resets the run of skips
  return bad.to(torch::kFloat32);
}

int64_t NonFiniteGuard::take_interval_skips() {
  int64_t n = interval_.item<int64_t>();
  interval_.zero_();
  return n;
}

void NonFiniteGuard::check_consecutive(int64_t step) const {
  const int64_t n = consecutive_.item<int64_t>();
  if (n < max_consecutive_) return;
  throw std::runtime_error("non-finite loss or gradients in " + std::to_string(n) + " consecutive steps (" +
                           std::to_string(step - n + 1) + " to " + std::to_string(step) +
                           "), every one skipped; stopping (train.max_nonfinite_steps is " +
                           std::to_string(max_consecutive_) +
                           "); no checkpoint of them was written. Lower train.lr or raise train.warmup_steps, and "
                           "continue from an earlier checkpoint with --resume PATH");
}

}  // namespace fm
