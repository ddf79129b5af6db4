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
#include "config/config.h"
#include "path/prob_path.h"

namespace fm {

// The training loss of a network output `out` for the pair (x0, x1) at times t [B], whose path sample is `ps`
// (path.sample(x0, x1, t)): regression_loss of the target's prediction against its target.
torch::Tensor target_loss(Target target, const ProbPath& path, const torch::Tensor& out, const torch::Tensor& x0,
                          const torch::Tensor& x1, const torch::Tensor& t, const PathSample& ps,
                          const LossConfig& loss = {});

// The regression loss of `pred` against `target` ([B, ...], d = numel / B elements per sample), a float scalar:
//   mse           the mean over all elements of (pred - target)^2
//   pseudo_huber  per sample (sqrt(|r|^2 + c^2) - c) / d with r = pred - target over all d elements, then the mean
//                 over the batch (Song & Dhariwal 2023; Lee et al. 2024 train 2-rectified flows with it). c is
//                 loss.huber_c, or 0.00054 sqrt(d) (the papers' choice) when that is 0. The 1/d is rfpp's own
//                 normalisation (train.py's 'huber' loss), which keeps the loss on mse's per-element scale.
// Any objective may call it with the prediction and target it regresses.
torch::Tensor regression_loss(const LossConfig& loss, const torch::Tensor& pred, const torch::Tensor& target);
// The c that pseudo_huber uses for samples of d elements.
double huber_c(const LossConfig& loss, int64_t d);

// The score grad log p_t(x_t) implied by the marginal velocity v at (t, x_t), t: [B]. With E0 = E[x0 | x_t] and
// E1 = E[x1 | x_t], v = alpha' E1 + sigma' E0, x_t = alpha E1 + sigma E0 and score = -E0 / sigma (Tweedie), so
//   score = (alpha v - alpha' x_t) / (sigma (alpha' sigma - alpha sigma'))
// (SiT's get_score_from_velocity, multiplied through by alpha'). Where alpha_t = 0 (the noise end) it is
// -x_t / sigma^2, the score of pure noise, whatever alpha' is; singular at the data end of a path with sigma_1 = 0.
torch::Tensor velocity_to_score(const ProbPath& path, const torch::Tensor& v, const torch::Tensor& x_t,
                                const torch::Tensor& t);

// The velocity at (t, x_t) implied by a network output `out` of the given target; t: [B].
torch::Tensor target_to_velocity(Target target, const ProbPath& path, const torch::Tensor& out,
                                 const torch::Tensor& x_t, const torch::Tensor& t);

// The times [lo, hi] at which a network of this target is evaluated: the path's finite range, kept kSingularEndGap
// away from both ends unless the target is velocity (which needs no conversion).
std::pair<double, double> target_time_range(Target target, const ProbPath& path);

}  // namespace fm
