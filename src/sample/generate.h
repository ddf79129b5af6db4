#pragma once
// Generation: integrate dx/dt = v(t, x) from noise at t=0 to data at t=1 with any of the ODE solvers, or the SDE with
// the same marginals with euler_maruyama (sample/sde.h).
#include <memory>
#include <string>

#include <torch/torch.h>

#include "config/config.h"
#include "nn/velocity_field.h"
#include "path/prob_path.h"
#include "solver/ode.h"
#include "solver/sde.h"

namespace fm {

struct SolveSettings {
  Solver solver = Solver::midpoint;
  int64_t steps = 100;  // fixed-step solvers; euler_maruyama: network evaluations, its last step included
  double atol = 1e-5, rtol = 1e-5;  // dopri5
  TimeGrid time_grid = TimeGrid::uniform;  // fixed-step solvers
  bool cuda_graph = false;            // CUDA: the network replayed as a CUDA graph (sample/graphed_velocity.h)
  // euler_maruyama: the diffusion coefficient w(t) = diffusion_norm * form(t), the final noise-free step's size, and
  // the path the model was trained on (the score from the velocity, the sigma form).
  Diffusion diffusion = Diffusion::sigma;
  double diffusion_norm = 1.0;
  double sde_last_step = 0.04;
  std::shared_ptr<const ProbPath> path;
};
// The settings of a `sample` section; euler_maruyama also needs `path`, which the overload taking the whole config
// fills from its `path` section.
SolveSettings solve_settings(const SampleConfig& c);
SolveSettings solve_settings(const Config& c);

// The time grid from 0 (noise) to 1 (data) that `s` asks for; for euler_maruyama the grid of its stochastic steps,
// from 0 to 1 - sde_last_step.
std::vector<double> sampling_grid(const SolveSettings& s);

// Classifier-free guidance: (1 + w) v(x|c) - w v(x|null) at times t in [lo, hi], the conditional velocity v(x|c)
// elsewhere (the guidance interval of Kynkaanniemi et al. 2024; [0, 1] guides everywhere). fm's t runs from noise at 0
// to data at 1; the paper's interval of noise levels (sigma_lo, sigma_hi] is [t(sigma_hi), t(sigma_lo)) here, with
// t(sigma) = time_at_noise_ratio(path, sigma) (1 / (1 + sigma) on CondOT).
struct Guidance {
  double scale = 0.0;
  double lo = 0.0, hi = 1.0;
  Guidance(double w = 0.0, double lo_ = 0.0, double hi_ = 1.0) : scale(w), lo(lo_), hi(hi_) {}  // NOLINT: implicit
  bool active_at(double t) const { return scale != 0.0 && t >= lo && t <= hi; }
};

// Samples from noise x0; labels (optional) condition a class-conditional model, with guidance where `guidance` says.
// The model runs in eval mode without gradients. euler_maruyama draws the noise of step k from sde_noise(k), shaped
// like x0 (nullptr: torch::randn from the default generator). Solver meanflow steps by the network's average velocity
// (solver/mean_flow.h; a network with a second time, else InputError), one evaluation a step over the grid of `s`,
// guidance mixing average velocities alike.
OdeResult generate(VelocityField& model, const torch::Tensor& x0, const torch::Tensor& labels, const SolveSettings& s,
                   const Guidance& guidance = {}, const StepCallback& on_step = nullptr,
                   const StepNoise& sde_noise = nullptr);

}  // namespace fm
