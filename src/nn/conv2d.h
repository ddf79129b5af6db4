#pragma once
// The U-Net's convolutions. A 3x3 convolution with stride 1 and padding 1 on float32 CPU tensors with at least 16
// channels in and out, trained (its weight needs a gradient), runs through Winograd's F(4x4, 3x3) (nn/winograd.h):
// its forward pass and its weight and input gradients. Every other convolution, and every
// convolution at inference (sampling, likelihood: they stay oneDNN's, as in PyTorch), is the module's own forward.
// The Winograd backward is not itself differentiable (no double backward).
#include <torch/torch.h>

namespace fm {

torch::Tensor conv2d(const torch::nn::Conv2d& conv, const torch::Tensor& x);

// Whether conv2d(conv, x) takes the Winograd convolution.
bool winograd_applies(const torch::nn::Conv2d& conv, const torch::Tensor& x);

}  // namespace fm
