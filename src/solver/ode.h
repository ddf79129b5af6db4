#pragma once
// ODE integrators over a plain callable f(t, x) = dx/dt. They know nothing of models or images: the state is one
// tensor, time runs from t0 to t1 in either direction, and every solve counts its function evaluations (NFE).
// In fm, t=0 is noise and t=1 is data: sampling integrates 0 -> 1, likelihood 1 -> 0.
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "config/choices.h"

namespace fm {

using OdeFunc = std::function<torch::Tensor(double t, const torch::Tensor& x)>;
// Called after every accepted step with the new time and state (for trajectories and progress).
using StepCallback = std::function<void(double t, const torch::Tensor& x)>;

struct OdeResult {
  torch::Tensor x;
  int64_t nfe = 0;
  int64_t accepted = 0;  // steps taken
  int64_t rejected = 0;  // adaptive solvers only
  bool graphed = false;  // set by generate(): the network ran as a replayed CUDA graph (sample.cuda_graph)
};

// Fixed-step methods over an explicit time grid (t_0, ..., t_K), which may be non-uniform or decreasing.
// `method`: euler, midpoint, heun or rk4.
OdeResult solve_fixed(const OdeFunc& f, const torch::Tensor& x0, const std::vector<double>& grid, Solver method,
                      const StepCallback& on_step = nullptr);

struct Dopri5Options {
  double atol = 1e-5;
  double rtol = 1e-5;
  double first_step = 0.0;  // 0: chosen as torchdiffeq does (Hairer's rule)
  int64_t max_steps = 1000000;
};

// Dormand-Prince 5(4) with torchdiffeq's controller: RMS error norm scaled by atol + rtol max(|y0|, |y1|),
// safety 0.9, growth at most 10x, shrink at least 0.2x, no shrinking after an accepted step. The last step is
// shortened to land on t1 exactly. NFE = 2 (initial step selection) + 6 per attempted step (FSAL).
OdeResult solve_dopri5(const OdeFunc& f, const torch::Tensor& x0, double t0, double t1, const Dopri5Options& opt,
                       const StepCallback& on_step = nullptr);

// `grid` is used by fixed-step methods; dopri5 uses its front and back.
OdeResult solve_ode(const OdeFunc& f, const torch::Tensor& x0, const std::vector<double>& grid, Solver method,
                    const Dopri5Options& opt = {}, const StepCallback& on_step = nullptr);

// Whether `method` steps over a grid of sample.steps (every solver but dopri5; euler_maruyama is the SDE solver of
// sample/sde.h and meanflow's steps are solver/mean_flow.h's, which solve_ode does not run).
bool is_fixed_step(Solver method);

// K steps of equal size from t0 to t1.
std::vector<double> uniform_grid(double t0, double t1, int64_t steps);

// The EDM grid as flow_matching uses it for sampling: sigma_i from sigma_max to sigma_min with exponent rho, mapped to
// t_i = 1 - sigma_i / (1 + sigma_i), so that t increases from near 0 (noise) to near 1 (data); the grid starts at
// exactly 0 and ends at exactly 1.
std::vector<double> edm_grid(int64_t steps, double rho = 7.0, double sigma_min = 0.002, double sigma_max = 80.0);

}  // namespace fm
