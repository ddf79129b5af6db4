#pragma once
// Euler-Maruyama for an Ito SDE dx = f(t, x) dt + g(t) dW over a plain drift, a scalar diffusion coefficient and a
// noise source: like the ODE solvers, it knows nothing of models, paths or images, runs over an explicit time grid,
// counts its drift evaluations (NFE) and calls back after every step. In fm, t=0 is noise and t=1 is data.
#include <functional>
#include <vector>

#include <torch/torch.h>

#include "solver/ode.h"

namespace fm {

// g(t): the coefficient of dW (a scalar for all of x).
using SdeDiffusion = std::function<double(double t)>;
// Standard normal draws shaped like the state for step k (k = 0, 1, ...); each call one fresh draw.
using StepNoise = std::function<torch::Tensor(int64_t k)>;

// Over the grid t_0 < ... < t_K: x_{k+1} = x_k + f(t_k, x_k) h_k + g(t_k) sqrt(h_k) z_k, z_k = noise(k). Then, when
// last_step > 0, one noise-free step x <- x + f(t_K, x) last_step to t_K + last_step (SiT's "Mean" last step, which
// denoises the last sample instead of adding noise at the end). NFE = K + (last_step > 0).
OdeResult solve_euler_maruyama(const OdeFunc& drift, const SdeDiffusion& diffusion, const StepNoise& noise,
                               const torch::Tensor& x0, const std::vector<double>& grid, double last_step = 0.0,
                               const StepCallback& on_step = nullptr);

}  // namespace fm
