#pragma once
// The one door to fm's own compute kernels and the layout rules that go with them. The network code (nn/) calls
// these ops and nothing else of this folder; whether a kernel of fm's or LibTorch's own op runs is decided here.
//
// What is behind it: on the CPU, Winograd F(4x4, 3x3) for the trained 3x3 convolutions (kernels/winograd.h) and a
// fused GroupNorm + shift + SiLU on channels-last float32 activations with AVX2 (kernels/group_norm_silu.h). They
// serve tests and demos on the CPU, where they are measured faster than LibTorch's (docs/performance.md); on CUDA,
// and in a build configured with -DFM_CPU_KERNELS=OFF, every call is LibTorch's own op.
#include <vector>

#include <torch/torch.h>

namespace fm::kernels {

// conv->forward(x), or the same convolution through a CPU kernel where one applies.
torch::Tensor conv2d(torch::nn::Conv2dImpl& conv, const torch::Tensor& x);

// silu(group_norm(x + shift[:, :, None, None], groups, weight, bias, eps)), the SiLU only when `silu`; shift is
// [N, C] or undefined. Computed in x's dtype.
torch::Tensor group_norm_silu(const torch::Tensor& x, int64_t groups, const torch::Tensor& weight,
                              const torch::Tensor& bias, double eps, const torch::Tensor& shift, bool silu);

// Multi-head attention softmax(q k^T / sqrt(d)) v over [B, heads, tokens, d] (at::scaled_dot_product_attention's
// contract, no mask or dropout): LibTorch's fused kernel where it may run, its composite math form (matmul, softmax,
// matmul) where forward-mode derivatives or double backward are needed (see TwiceDifferentiableScope).
torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v);

// fm's kernels are custom autograd Functions, and LibTorch's fused attention kernels are opaque too: their backward is
// not itself differentiable and they have no forward-mode derivative. So a call through this door whose tensors carry
// a forward-mode tangent (dual tensors, at the first dual level, the one fm's Jacobian-vector products use) runs
// LibTorch's plain differentiable ops without asking, and a computation that differentiates a gradient (double
// backward) asks for them with this scope: within its life, on this thread, every call through this door runs them.
// Scopes nest.
class TwiceDifferentiableScope {
 public:
  TwiceDifferentiableScope();
  ~TwiceDifferentiableScope();
  TwiceDifferentiableScope(const TwiceDifferentiableScope&) = delete;
  TwiceDifferentiableScope& operator=(const TwiceDifferentiableScope&) = delete;

 private:
  bool saved_;
};

// Whether a network for data of shape sample_shape ({C, H, W} images; toys never) runs channels-last (NHWC) on
// `device`: CUDA training (cuDNN's fastest convolutions with bf16 take it); the CPU where the fused GroupNorm runs
// (LibTorch's own GroupNorm is slow on NHWC, and oneDNN and the Winograd convolutions prefer it).
bool prefers_channels_last(const torch::Device& device, const std::vector<int64_t>& sample_shape, bool training);
// Makes every 4-D parameter of the module channels-last: the convolutions then return channels-last outputs
// whatever their input's layout, and the rest of the network keeps it.
void weights_to_channels_last(torch::nn::Module& model);

// Whether this build has the CPU kernels and this CPU runs the fused GroupNorm (x86-64 with AVX2 and FMA).
bool fused_cpu_group_norm_available();

// The threads fm's own CPU kernels run on now: at::get_num_threads() in a build whose kernels can use LibTorch's
// threads, 1 in one that cannot (a clang build against an OpenMP LibTorch), 0 in a build without CPU kernels.
int kernel_threads();

}  // namespace fm::kernels
