#include "solver/sde.h"

#include <cmath>

#include "util/error.h"

namespace fm {

OdeResult solve_euler_maruyama(const OdeFunc& drift, const SdeDiffusion& diffusion, const StepNoise& noise,
                               const torch::Tensor& x0, const std::vector<double>& grid, double last_step,
                               const StepCallback& on_step) {
  if (grid.size() < 2 && last_step <= 0.0) throw InputError("solver: euler_maruyama needs at least one step");
  OdeResult r;
  torch::Tensor x = x0;
  for (size_t k = 0; k + 1 < grid.size(); ++k) {
    const double t = grid[k], h = grid[k + 1] - grid[k];
    if (!(h > 0.0)) throw std::logic_error("solve_euler_maruyama: the time grid must increase");
    auto z = noise(static_cast<int64_t>(k));
    x = x + h * drift(t, x) + (diffusion(t) * std::sqrt(h)) * z.to(x.dtype());
    r.nfe += 1;
    r.accepted += 1;
    if (on_step) on_step(grid[k + 1], x);
  }
  if (last_step > 0.0) {
    const double t = grid.back();
    x = x + last_step * drift(t, x);
    r.nfe += 1;
    r.accepted += 1;
    if (on_step) on_step(t + last_step, x);
  }
  r.x = x;
  return r;
}

}  // namespace fm
