#pragma once
// GroupNorm with its neighbours in the ADM U-Net as one op: an optional per-(sample, channel) shift before it (the
// ResBlock's h + emb) and an optional SiLU after it.
//
// Why: LibTorch's CPU GroupNorm is fast on NCHW tensors but about 10x slower on channels-last ones, and channels-last
// is what oneDNN's convolutions want (NCHW activations are reordered to a blocked layout and back around every conv,
// about 11% of a CPU training step). On float32 channels-last CPU tensors, with AVX2, this runs fused kernels that read
// the input twice and write the output once, and keep only x and two numbers per group for the backward pass (the
// composite keeps the normalised tensor too). Everything else (other devices, dtypes or layouts) takes the composite
// group_norm -> silu of LibTorch. The fused backward is not itself differentiable (no double backward).
#include <torch/torch.h>

namespace fm {

// silu(group_norm(x + shift[:, :, None, None], groups, weight, bias, eps)), SiLU when silu; shift is [N, C] or
// undefined.
torch::Tensor group_norm_silu(const torch::Tensor& x, int64_t groups, const torch::Tensor& weight,
                              const torch::Tensor& bias, double eps, const torch::Tensor& shift, bool silu);

// Whether float32 channels-last activations on this CPU get the fused kernels (x86-64 with AVX2 and FMA):
// nn/memory_format.h keeps CPU activations channels-last only then.
bool fused_cpu_group_norm_available();

}  // namespace fm
