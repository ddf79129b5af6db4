#include "train/nonfinite_guard.h"

namespace fm {

namespace {
torch::Tensor counter(const torch::Device& device) {
  return torch::zeros({}, torch::TensorOptions().dtype(torch::kLong).device(device));
}
}  // namespace

NonFiniteGuard::NonFiniteGuard(const torch::Device& device, int64_t max_consecutive)
    : max_consecutive_(max_consecutive),
      next_read_(max_consecutive),
      interval_(counter(device)),
      checked_(counter(device)),
      current_(counter(device)),
      longest_(counter(device)),
      longest_end_(counter(device)) {}

torch::Tensor NonFiniteGuard::check(const torch::Tensor& loss, const torch::Tensor& grad_norm) {
  torch::NoGradGuard ng;
  auto bad = torch::isfinite(loss.detach()).logical_and(torch::isfinite(grad_norm)).logical_not();
  auto skip = bad.to(torch::kLong);
  interval_.add_(skip);
  checked_.add_(1);
  current_.add_(1).mul_(skip);  // a finite step ends the run of skips
  auto longer = current_ > longest_;
  longest_.copy_(torch::where(longer, current_, longest_));
  longest_end_.copy_(torch::where(longer, checked_, longest_end_));
  return bad.to(torch::kFloat32);
}

int64_t NonFiniteGuard::take_interval_skips() {
  int64_t n = interval_.item<int64_t>();
  interval_.zero_();
  return n;
}

NonFiniteGuard::Reading NonFiniteGuard::read(int64_t step) {
  auto v = torch::stack({checked_, current_, longest_, longest_end_}).cpu();
  const int64_t checked = v[0].item<int64_t>(), longest = v[2].item<int64_t>(), end = v[3].item<int64_t>();
  Reading r;
  r.current = v[1].item<int64_t>();
  if (longest >= max_consecutive_) {
    const int64_t last = step - (checked - end);
    r.too_long = SkippedRun{last - longest + 1, last};
  }
  // The next interval's longest run starts as the one under way.
  longest_.copy_(current_);
  longest_end_.copy_(checked_);
  next_read_ = step + max_consecutive_ - r.current;
  return r;
}

}  // namespace fm
