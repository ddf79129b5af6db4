#include "sample/straightness.h"

namespace fm {

StraightnessMeter::StraightnessMeter(const torch::Tensor& x0) : x0_(x0.flatten(1).to(torch::kFloat64)) {
  prev_a_ = torch::zeros_like(x0_);
  prev_a2_ = torch::zeros({x0_.size(0)}, x0_.options());
  ta_int_ = torch::zeros_like(x0_);
  a2_int_ = torch::zeros_like(prev_a2_);
}

void StraightnessMeter::step(double t, const torch::Tensor& x) {
  auto a = x.flatten(1).to(torch::kFloat64) - x0_;
  auto a2 = a.pow(2).sum(1);
  const double h = t - prev_t_;
  a2_int_ += 0.5 * h * (prev_a2_ + a2);
  ta_int_ += 0.5 * h * (prev_t_ * prev_a_ + t * a);
  t2_int_ += 0.5 * h * (prev_t_ * prev_t_ + t * t);
  prev_t_ = t, prev_a_ = a, prev_a2_ = a2;
}

torch::Tensor StraightnessMeter::finish(const torch::Tensor& x1) const {
  auto d = x1.flatten(1).to(torch::kFloat64) - x0_;
  return (a2_int_ - 2.0 * (ta_int_ * d).sum(1) + t2_int_ * d.pow(2).sum(1)).clamp_min(0.0);
}

}  // namespace fm
