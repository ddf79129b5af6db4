#pragma once
// GroupNorm with its neighbours in the ADM U-Net as one op on the CPU: an optional per-(sample, channel) shift before
// it (the ResBlock's h + emb) and an optional SiLU after it, for float32 channels-last activations on x86-64 with AVX2
// and FMA.
//
// Why: LibTorch's CPU GroupNorm is fast on NCHW tensors but about 10x slower on channels-last ones, and channels-last
// is what oneDNN's convolutions want (NCHW activations are reordered to a blocked layout and back around every conv).
// These kernels read the input twice and write the output once, and keep only x and two numbers per group for the
// backward pass (the composite keeps the normalised tensor too). The fused backward is not itself differentiable
// (no double backward).
#include <torch/torch.h>

namespace fm::kernels {

// Whether this CPU runs the kernels (AVX2 and FMA, and ATen's own dispatch level above the default).
bool avx2_group_norm_available();

// Whether fused_group_norm_silu takes these tensors: float32 CPU, x [N, C, H, W] channels-last with C a multiple of 8
// and of `groups`, on a CPU where the kernels run.
bool fused_group_norm_applies(const torch::Tensor& x, int64_t groups, const torch::Tensor& weight,
                              const torch::Tensor& bias, const torch::Tensor& shift);

// silu(group_norm(x + shift[:, :, None, None], groups, weight, bias, eps)), the SiLU when silu; shift is [N, C] or
// undefined. Only where fused_group_norm_applies.
torch::Tensor fused_group_norm_silu(const torch::Tensor& x, int64_t groups, const torch::Tensor& weight,
                                    const torch::Tensor& bias, double eps, const torch::Tensor& shift, bool silu);

}  // namespace fm::kernels
