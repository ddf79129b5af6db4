#pragma once
// Prediction targets: what the network regresses, and how its output becomes the velocity the ODE solvers integrate.
// With x_t = alpha_t x1 + sigma_t x0 (noise x0 at t=0, data x1 at t=1) and u_t = alpha'_t x1 + sigma'_t x0:
//   velocity  v                      loss |v - u_t|^2 (flow matching)
//   noise     eps ~ x0               loss |eps - x0|^2 (DDPM's simple loss)
//   data      D ~ x1                 loss |D - x1|^2
//   score     s ~ -x0 / sigma_t      loss sigma_t^2 |s + x0 / sigma_t|^2 = |sigma_t s + x0|^2 (denoising score
//                                    matching with lambda(t) = sigma_t^2, Song et al. 2021 as the paper uses it)
// and, solving x_t's equation for the missing endpoint,
//   from D:   u = (sigma'/sigma) x_t + (alpha' - sigma' alpha / sigma) D         (needs sigma_t > 0)
//   from eps: u = (alpha'/alpha) x_t + (sigma' - alpha' sigma / alpha) eps       (needs alpha_t > 0)
//   from s:   eps = -sigma_t s.
// The conversions are singular where alpha_t or sigma_t vanish (CondOT: alpha_0 = 0, sigma_1 = 0), so a network with a
// target other than velocity is evaluated at times clamped into target_time_range.
#include <string>
#include <utility>

#include <torch/torch.h>

#include "config/choices.h"
#include "path/prob_path.h"

namespace fm {

// The training loss (mean over all elements) of a network output `out` for the pair (x0, x1) at times t [B], whose
// path sample is `ps` (path.sample(x0, x1, t)).
torch::Tensor target_loss(Target target, const ProbPath& path, const torch::Tensor& out, const torch::Tensor& x0,
                          const torch::Tensor& x1, const torch::Tensor& t, const PathSample& ps);

// The velocity at (t, x_t) implied by a network output `out` of the given target; t: [B].
torch::Tensor target_to_velocity(Target target, const ProbPath& path, const torch::Tensor& out,
                                 const torch::Tensor& x_t, const torch::Tensor& t);

// The times [lo, hi] at which a network of this target is evaluated: the path's finite range, kept kSingularEndGap
// away from both ends unless the target is velocity (which needs no conversion).
std::pair<double, double> target_time_range(Target target, const ProbPath& path);

}  // namespace fm
