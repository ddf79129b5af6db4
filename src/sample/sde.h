#pragma once
// SDE sampling of a velocity model as SiT does it (Ma et al. 2024, "SiT: Exploring Flow and Diffusion-based Generative
// Models with Scalable Interpolant Transformers", and their transport/ code): for any diffusion
// coefficient w(t) >= 0 the SDE
//   dx = [v(t, x) + w(t) s(t, x)] dt + sqrt(2 w(t)) dW,   s = grad log p_t, from v by velocity_to_score (path/target.h)
// has the same marginals p_t as the ODE dx = v dt (the added w s drift and the diffusion cancel in the Fokker-Planck
// equation). It is integrated by Euler-Maruyama from t=0 to 1 - sde_last_step, then one noise-free step of
// sde_last_step on the drift reaches t=1 (SiT's last_step "Mean", size 0.04 by default): the score is singular at
// t=1 where sigma_t = 0, and a last stochastic step would leave its noise in the samples. NFE = sample.steps: steps - 1
// stochastic steps and the last one (SiT's num_sampling_steps = 250 is --steps 250). The last step denoises where w
// vanishes at t=1 (sigma, linear, decreasing, increasing_decreasing); with `constant` its w * score term contracts the
// samples (a Gaussian's variance 0.17 for 0.25 in the tests), so that form wants sde_last_step = 0: stochastic steps
// all the way to t=1, the last of them starting before the singular end.
//
// Time: fm's t has noise at 0 and data at 1. So has SiT's code (transport/path.py: ICPlan's alpha_t = t multiplies the
// data, sigma_t = 1 - t the noise, and the sampler integrates t from 0 to 1); SiT's paper writes data at t=0
// (t_paper = 1 - t). The forms below are the code's, in fm's t; the paper's w_t = sigma_t is the `sigma` form in
// either, as it is written through the noise scale rather than t:
//   sigma                  w = norm sigma_t (SiT's default)      constant  w = norm
//   linear                 w = norm (1 - t)                      decreasing  w = (norm cos(pi t) + 1)^2 / 4
//   increasing_decreasing  w = norm sin(pi t)^2
#include "sample/generate.h"

namespace fm {

// w(t) of `form` with scale `norm` on `path`.
double diffusion_w(Diffusion form, double norm, const ProbPath& path, double t);

// The grid of the stochastic steps: s.steps - 1 of them (s.steps when sde_last_step is 0) from 0 to
// 1 - s.sde_last_step, uniform or EDM-spaced as s.time_grid says.
std::vector<double> sde_grid(const SolveSettings& s);

// Integrates the SDE of the velocity `v` (a function of t and x, guidance already applied) from x0, with s.path,
// s.diffusion, s.diffusion_norm, s.sde_last_step and s.steps.
OdeResult solve_sde(const OdeFunc& v, const torch::Tensor& x0, const SolveSettings& s, const StepNoise& noise,
                    const StepCallback& on_step = nullptr);

}  // namespace fm
