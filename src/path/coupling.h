#pragma once
// Couplings of noise and data (torchcfm's minibatch methods): which noise sample x0 each data sample x1 is paired with
// before the path is drawn. Noise is at t=0, data at t=1.
//   independent  the batch as drawn (the paper)
//   ot           exact minibatch OT: x0 re-ordered by the assignment minimising sum |x0 - x1|^2 (OT-CFM)
//   sinkhorn     n pairs (i, j) drawn with replacement from the entropic plan with regularisation ot_reg
//   sb           Schrodinger-bridge CFM: pairs from the entropic plan with reg 2 sb_sigma^2, and Brownian-bridge noise
//                sb_sigma sqrt(t (1 - t)) eps added to x_t, whose time derivative joins the target (bridge_noise)
//   pairs        the pairs as the data set holds them (pairs:DIR, written by fm reflow): x0 is the noise a flow started
//                from and x1 where it ended, so training on them learns the rectified flow of that flow's coupling
//                (Liu et al. 2022, "Flow Straight and Fast": Reflow)
// Class labels travel with their images (x1).
#include <torch/torch.h>

#include "config/config.h"

namespace fm {

struct Pairing {
  torch::Tensor x0, x1, labels;  // labels undefined when the data has none
};

// x0: the batch's noise, drawn independently of x1, or with coupling pairs the noise the data set pairs with x1.
Pairing couple(const PathConfig& cfg, const torch::Tensor& x0, const torch::Tensor& x1, const torch::Tensor& labels);

// The Brownian-bridge term of SB-CFM at times t [B] broadcast like x: x_t gains std * eps and u_t gains d_std * eps,
// with std = sigma sqrt(t (1 - t)) and d_std = sigma (1 - 2t) / (2 sqrt(t (1 - t))) (torchcfm's corrected target
// (1 - 2t) / (2 t (1 - t)) (x_t - mu_t), written per noise sample). d_std is infinite at t = 0 and 1: SB training
// keeps t in [kSingularEndGap, 1 - kSingularEndGap].
struct BridgeNoise {
  torch::Tensor std, d_std;
};
BridgeNoise bridge_noise(double sigma, const torch::Tensor& t);

}  // namespace fm
