#include "kernels/conv3x3.h"

#include <ATen/autocast_mode.h>

#include <variant>

#include "kernels/winograd.h"

namespace fm::kernels {
namespace {

// Below this many input or output channels (the U-Net's first and last convs, 3 channels) the transforms cost more
// than the products save: oneDNN keeps those.
constexpr int64_t kMinChannels = 16;

class Conv3x3 : public torch::autograd::Function<Conv3x3> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias) {
    ctx->save_for_backward({x, weight});
    ctx->saved_data["has_bias"] = bias.numel() > 0;
    const auto b = bias.numel() ? bias : torch::Tensor();
    // The transforms write channels-last; an NCHW network (kernels.h, prefers_channels_last) gets NCHW back, as
    // from oneDNN.
    return winograd::conv3x3(x, weight, b).contiguous(x.suggest_memory_format());
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1];
    const auto& dy = grads[0];
    torch::Tensor dx, dw, db;
    // The input gradient is the convolution of dy with the kernel flipped and its channels swapped.
    if (ctx->needs_input_grad(0))
      dx = winograd::conv3x3(dy, w.flip({2, 3}).transpose(0, 1), {}).contiguous(x.suggest_memory_format());
    if (ctx->needs_input_grad(1)) dw = winograd::conv3x3_weight_grad(x, dy).contiguous(w.suggest_memory_format());
    if (ctx->needs_input_grad(2) && ctx->saved_data["has_bias"].toBool()) db = dy.sum({0, 2, 3});
    return {dx, dw, db};
  }
};

bool is_3x3_same(const torch::nn::detail::ConvNdOptions<2>& o) {
  auto all = [](const auto& a, int64_t v) { return (*a)[0] == v && (*a)[1] == v; };
  const auto* pad = std::get_if<torch::ExpandingArray<2>>(&o.padding());
  return all(o.kernel_size(), 3) && all(o.stride(), 1) && all(o.dilation(), 1) && pad && all(*pad, 1) &&
         o.groups() == 1 && std::holds_alternative<torch::enumtype::kZeros>(o.padding_mode());
}

}  // namespace

bool winograd_applies(const torch::nn::Conv2dImpl& conv, const torch::Tensor& x) {
  const auto& w = conv.weight;
  // Not under CPU autocast: the forward pass would be bf16 below 64 channels and float32 above.
  return torch::GradMode::is_enabled() && w.requires_grad() && x.is_cpu() && w.is_cpu() &&
         !at::autocast::is_autocast_enabled(at::kCPU) &&
         x.scalar_type() == torch::kFloat32 && w.scalar_type() == torch::kFloat32 && x.dim() == 4 &&
         is_3x3_same(conv.options) && w.size(0) >= kMinChannels && w.size(1) >= kMinChannels;
}

torch::Tensor winograd_conv2d(torch::nn::Conv2dImpl& conv, const torch::Tensor& x) {
  // Custom autograd functions need defined inputs: no bias is an empty tensor.
  const auto& bias = conv.bias;
  return Conv3x3::apply(x, conv.weight, bias.defined() ? bias : torch::empty({0}, x.options()));
}

}  // namespace fm::kernels
