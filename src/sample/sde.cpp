#include "sample/sde.h"

#include <algorithm>
#include <cmath>

#include "path/target.h"
#include "util/error.h"

namespace fm {

double diffusion_w(Diffusion form, double norm, const ProbPath& path, double t) {
  switch (form) {
    case Diffusion::sigma:
      return norm * path.sigma(torch::tensor(t, torch::kFloat64)).item<double>();
    case Diffusion::constant:
      return norm;
    case Diffusion::linear:
      return norm * (1.0 - t);
    case Diffusion::decreasing:
      return 0.25 * std::pow(norm * std::cos(M_PI * t) + 1.0, 2);
    case Diffusion::increasing_decreasing:
      return norm * std::pow(std::sin(M_PI * t), 2);
  }
  throw std::logic_error("diffusion_w: unhandled sample.diffusion");
}

std::vector<double> sde_grid(const SolveSettings& s) {
  const bool last = s.sde_last_step > 0.0;
  if (s.steps < (last ? 2 : 1))
    throw InputError("--steps: euler_maruyama takes " + std::to_string(s.steps) + " network evaluations, at least " +
                     (last ? "2 (a stochastic step and the final step of sample.sde_last_step)" : "1"));
  SolveSettings ode = s;
  ode.solver = Solver::euler;
  ode.steps = last ? s.steps - 1 : s.steps;
  auto grid = sampling_grid(ode);
  for (auto& t : grid) t *= 1.0 - s.sde_last_step;
  return grid;
}

OdeResult solve_sde(const OdeFunc& v, const torch::Tensor& x0, const SolveSettings& s, const StepNoise& noise,
                    const StepCallback& on_step) {
  if (!s.path) throw std::logic_error("solve_sde: euler_maruyama needs the model's path (SolveSettings::path)");
  const ProbPath& path = *s.path;
  // The score's conversion is finite inside the path's range; the network itself clamps as its target needs.
  auto drift = [&](double t, const torch::Tensor& x) {
    auto vt = v(t, x);
    const double w = diffusion_w(s.diffusion, s.diffusion_norm, path, t);
    if (w == 0.0) return vt;
    const double tc = std::min(path.t_max(), std::max(path.t_min(), t));
    auto tt = torch::full({x.size(0)}, tc, x.options());
    return vt + w * velocity_to_score(path, vt, x, tt);
  };
  auto g = [&](double t) { return std::sqrt(2.0 * diffusion_w(s.diffusion, s.diffusion_norm, path, t)); };
  return solve_euler_maruyama(drift, g, noise, x0, sde_grid(s), s.sde_last_step, on_step);
}

}  // namespace fm
