#pragma once
// The trained 3x3 convolutions on the CPU through Winograd's F(4x4, 3x3) (kernels/winograd.h): a convolution with
// stride 1 and padding 1 on float32 CPU tensors with at least 16 channels in and out whose weight needs a gradient
// takes it for its forward pass and both gradients. Every other convolution, and every convolution at inference
// (sampling, likelihood: they stay oneDNN's, as in PyTorch), is the module's own forward. The Winograd backward is not
// itself differentiable (no double backward).
#include <torch/torch.h>

namespace fm::kernels {

// Whether winograd_conv2d applies to conv(x).
bool winograd_applies(const torch::nn::Conv2dImpl& conv, const torch::Tensor& x);

// conv(x) through Winograd's convolution, for a conv and x where winograd_applies.
torch::Tensor winograd_conv2d(torch::nn::Conv2dImpl& conv, const torch::Tensor& x);

}  // namespace fm::kernels
