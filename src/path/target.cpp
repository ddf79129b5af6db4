#include "path/target.h"

#include <algorithm>

#include "util/error.h"

namespace fm {

torch::Tensor target_loss(Target target, const ProbPath& path, const torch::Tensor& out, const torch::Tensor& x0,
                          const torch::Tensor& x1, const torch::Tensor& t, const PathSample& ps) {
  switch (target) {
    case Target::velocity:
      return torch::mse_loss(out, ps.u_t);
    case Target::noise:
      return torch::mse_loss(out, x0);
    case Target::data:
      return torch::mse_loss(out, x1);
    case Target::score:
      // sigma_t^2 |s - (-x0 / sigma_t)|^2 without dividing by sigma_t.
      return torch::mse_loss(path.sigma(broadcast_time(t, x1)) * out, -x0);
  }
  throw std::logic_error("target_loss: unhandled target");
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
