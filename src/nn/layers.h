#pragma once
// The two layers of the ADM U-Net that fm's compute kernels can take over: its convolutions and its normalisation.
// Each is a plain LibTorch module with LibTorch's parameter names; its forward goes through kernels/kernels.h, which
// runs a kernel of fm's where one applies (the CPU) and LibTorch's own op everywhere else, with the same result.
#include <torch/torch.h>

namespace fm {

// torch::nn::Conv2d: the same options, parameters and forward.
class Conv2dImpl : public torch::nn::Conv2dImpl {
 public:
  using torch::nn::Conv2dImpl::Conv2dImpl;
  torch::Tensor forward(const torch::Tensor& x);
};
TORCH_MODULE(Conv2d);

// guided-diffusion's normalization(channels): GroupNorm with 32 groups, computed in float32 (so that it stays accurate
// under bf16 autocast) and cast back, followed by a SiLU when `then_silu` (the norm-then-SiLU that opens each of ADM's
// residual layers and its output head). forward(x, shift) normalises x + shift[:, :, None, None], the ResBlock's
// h + emb; shift [N, C] may be undefined.
class GroupNorm32Impl : public torch::nn::Module {
 public:
  GroupNorm32Impl(int64_t channels, bool then_silu);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& shift = {});
  torch::Tensor weight, bias;

  static constexpr int64_t kGroups = 32;

 private:
  bool silu_;
};
TORCH_MODULE(GroupNorm32);

}  // namespace fm
