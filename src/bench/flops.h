#pragma once
// Floating-point operations of the ADM U-Net, counted layer by layer from its config the way
// torch.utils.flop_counter.FlopCounterMode counts them (and the way MFU is usually quoted): 2 per multiply-add of the
// convolutions, linear layers and attention matmuls (q k^T and a v); biases, norms, activations, resampling and
// element-wise ops are not counted. The training step is taken as 3 forward passes (forward, and a backward that
// computes the gradients of both inputs and weights: 2 forward passes' worth).
#include <cstdint>
#include <vector>

#include "config/config.h"

namespace fm {

// One forward pass of the U-Net `cfg` over `batch` images of shape {C, H, W}.
double unet_forward_flops(const UNetConfig& cfg, const std::vector<int64_t>& shape, int64_t batch);

// Forward and backward: 3 x forward.
inline double unet_train_step_flops(const UNetConfig& cfg, const std::vector<int64_t>& shape, int64_t batch) {
  return 3.0 * unet_forward_flops(cfg, shape, batch);
}

// MeanFlow's step (train/meanflow_objective.h): the forward pass and its Jacobian-vector product in one pass (every
// multiply-add again on the tangent, the attention's two matmuls twice by the product rule), the backward of the
// forward (2 forward passes' worth), and `guidance_forwards` passes without gradients (the unconditional, and with
// kappa the conditional, velocity of guidance in training): (4 + guidance_forwards) x forward + the attention
// matmuls.
double unet_meanflow_train_step_flops(const UNetConfig& cfg, const std::vector<int64_t>& shape, int64_t batch,
                                      int guidance_forwards = 0);

}  // namespace fm
