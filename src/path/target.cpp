#include "path/target.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace fm {

torch::Tensor target_loss(Target target, const ProbPath& path, const torch::Tensor& out, const torch::Tensor& x0,
                          const torch::Tensor& x1, const torch::Tensor& t, const PathSample& ps,
                          const LossConfig& loss) {
  switch (target) {
    case Target::velocity:
      return regression_loss(loss, out, ps.u_t);
    case Target::noise:
      return regression_loss(loss, out, x0);
    case Target::data:
      return regression_loss(loss, out, x1);
    case Target::score:
      // sigma_t^2 |s - (-x0 / sigma_t)|^2 without dividing by sigma_t.
      return regression_loss(loss, path.sigma(broadcast_time(t, x1)) * out, -x0);
  }
  throw std::logic_error("target_loss: unhandled target");
}

double huber_c(const LossConfig& loss, int64_t d) {
  return loss.huber_c > 0.0 ? loss.huber_c : 0.00054 * std::sqrt(static_cast<double>(d));
}

torch::Tensor regression_loss(const LossConfig& loss, const torch::Tensor& pred, const torch::Tensor& target) {
  switch (loss.type) {
    case LossType::mse:
      return torch::mse_loss(pred, target);
    case LossType::pseudo_huber: {
      const int64_t b = pred.size(0), d = b > 0 ? pred.numel() / b : 0;
      const double c = huber_c(loss, d);
      auto sq = (pred - target).reshape({b, -1}).square().sum(1);
      return ((torch::sqrt(sq + c * c) - c) / static_cast<double>(std::max<int64_t>(d, 1))).mean();
    }
  }
  throw std::logic_error("regression_loss: unhandled loss.type");
}

torch::Tensor velocity_to_score(const ProbPath& path, const torch::Tensor& v, const torch::Tensor& x_t,
                                const torch::Tensor& t) {
  auto tt = broadcast_time(t, x_t);
  auto a = path.alpha(tt), s = path.sigma(tt), da = path.d_alpha(tt), ds = path.d_sigma(tt);
  // Where alpha_t = 0, x_t is pure noise N(0, sigma^2): its score needs no velocity (and a path with alpha' = 0 there
  // too, polynomial n > 1, would give 0/0).
  return torch::where(a == 0, -x_t / (s * s), (a * v - da * x_t) / (s * (da * s - a * ds)));
}

torch::Tensor target_to_velocity(Target target, const ProbPath& path, const torch::Tensor& out,
                                 const torch::Tensor& x_t, const torch::Tensor& t) {
  if (target == Target::velocity) return out;
  auto tt = broadcast_time(t, x_t);
  auto a = path.alpha(tt), s = path.sigma(tt), da = path.d_alpha(tt), ds = path.d_sigma(tt);
  if (target == Target::data) return (ds / s) * x_t + (da - ds * a / s) * out;
  auto eps = target == Target::score ? -s * out : out;
  return (da / a) * x_t + (ds - da * s / a) * eps;
}

std::pair<double, double> target_time_range(Target target, const ProbPath& path) {
  if (target == Target::velocity) return {path.t_min(), path.t_max()};
  return {std::max(path.t_min(), kSingularEndGap), std::min(path.t_max(), 1.0 - kSingularEndGap)};
}

}  // namespace fm
