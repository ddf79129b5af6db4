#include "solver/mean_flow.h"

#include "util/error.h"

namespace fm {

OdeResult solve_mean_flow(const MeanVelocityFunc& u, const torch::Tensor& x0, const std::vector<double>& grid,
                          const StepCallback& on_step) {
  if (grid.size() < 2) throw InputError("solver: a time grid needs at least 2 points");
  OdeResult res;
  torch::Tensor x = x0;
  for (size_t i = 0; i + 1 < grid.size(); ++i) {
    const double t = grid[i], r = grid[i + 1];
    x = x + (r - t) * u(t, r, x);
    res.nfe += 1;
    res.accepted += 1;
    if (on_step) on_step(r, x);
  }
  res.x = x;
  return res;
}

}  // namespace fm
