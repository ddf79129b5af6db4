#pragma once
// Sampling by average velocities (MeanFlow, Geng et al. 2025): over a time grid t_0 < ... < t_K, each step jumps
//     x_{t_{i+1}} = x_{t_i} + (t_{i+1} - t_i) u(t_i, t_{i+1}, x_{t_i})
// with u(t, r, x) the average velocity from t to r, one evaluation a step; exact when u is the flow's true average
// velocity, whatever the step. In fm's times (noise at 0, data at 1); the paper's z_r = z_t - (t - r) u(z_t, r, t) is
// the same step in its times (train/meanflow_objective.h translates). Knows nothing of networks.
#include <functional>
#include <vector>

#include <torch/torch.h>

#include "solver/ode.h"

namespace fm {

// u(t, r, x): the average velocity from time t to time r of the flow through x at time t.
using MeanVelocityFunc = std::function<torch::Tensor(double t, double r, const torch::Tensor& x)>;

// Steps over `grid` (at least 2 times, in either direction) from x0 at grid.front(); NFE is one per step.
OdeResult solve_mean_flow(const MeanVelocityFunc& u, const torch::Tensor& x0, const std::vector<double>& grid,
                          const StepCallback& on_step = nullptr);

}  // namespace fm
