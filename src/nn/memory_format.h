#pragma once
// Where fm keeps image activations channels-last (NHWC). Making a network's 4-D weights channels-last is enough: the
// convolutions then return channels-last outputs whatever their input's layout, and the rest of the U-Net keeps it.
//  - CUDA, training: cuDNN's fastest convolutions (with bf16) use it.
//  - CPU, where the fused GroupNorm kernels run (nn/group_norm_silu.h): oneDNN reorders NCHW activations to a blocked
//    layout and back around every convolution, fm's Winograd convolutions (nn/conv2d.h) read channels-last, and
//    LibTorch's own GroupNorm is slow on NHWC.
#include <vector>

#include <torch/torch.h>

namespace fm {

// Whether a network for data of shape sample_shape ({C, H, W} images; toys are never) runs channels-last on device.
bool prefers_channels_last(const torch::Device& device, const std::vector<int64_t>& sample_shape, bool training);

// Makes every 4-D parameter of the module channels-last.
void weights_to_channels_last(torch::nn::Module& model);

}  // namespace fm
