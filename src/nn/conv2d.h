#pragma once
// The U-Net's convolutions. A 3x3 convolution with stride 1 and padding 1 on float32 CPU tensors, trained (its weight
// needs a gradient), takes its weight gradient from Winograd's F(4x4, 3x3) (nn/winograd.h) instead of oneDNN; the
// forward pass and the input gradient stay oneDNN's. Every other convolution is the module's own forward. The
// Winograd backward is not itself differentiable (no double backward through the weights).
#include <torch/torch.h>

namespace fm {

torch::Tensor conv2d(const torch::nn::Conv2d& conv, const torch::Tensor& x);

// Whether conv2d(conv, x) takes the Winograd weight gradient.
bool winograd_weight_grad_applies(const torch::nn::Conv2d& conv, const torch::Tensor& x);

}  // namespace fm
