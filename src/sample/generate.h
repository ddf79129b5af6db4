#pragma once
// Generation: integrate dx/dt = v(t, x) from noise at t=0 to data at t=1 with any of the ODE solvers.
#include <string>

#include <torch/torch.h>

#include "config/config.h"
#include "nn/velocity_field.h"
#include "solver/ode.h"

namespace fm {

struct SolveSettings {
  Solver solver = Solver::midpoint;
  int64_t steps = 100;  // fixed-step solvers
  double atol = 1e-5, rtol = 1e-5;  // dopri5
  TimeGrid time_grid = TimeGrid::uniform;  // fixed-step solvers
  bool cuda_graph = false;            // CUDA: the network replayed as a CUDA graph (sample/graphed_velocity.h)
};
SolveSettings solve_settings(const SampleConfig& c);

// The time grid from 0 (noise) to 1 (data) that `s` asks for.
std::vector<double> sampling_grid(const SolveSettings& s);

// Samples from noise x0; labels (optional) condition a class-conditional model, and cfg_scale w > 0 applies
// classifier-free guidance (1 + w) v(x|c) - w v(x|null). The model runs in eval mode without gradients. Solver meanflow
// steps by the network's average velocity (solver/mean_flow.h; a network with a second time, else InputError), one
// evaluation a step over the grid of `s`, guidance mixing average velocities alike.
OdeResult generate(VelocityField& model, const torch::Tensor& x0, const torch::Tensor& labels, const SolveSettings& s,
                   double cfg_scale = 0.0, const StepCallback& on_step = nullptr);

}  // namespace fm
