#include "kernels/group_norm_silu.h"

#include <ATen/Parallel.h>
#include <ATen/Version.h>

#include <vector>

#include "kernels/group_norm_kernel.h"

namespace fm::kernels {

bool avx2_group_norm_available() {
  // ATen's own dispatch level as well as the CPU's flags: ATEN_CPU_CAPABILITY=default turns these kernels off too.
  static const bool available = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                                at::get_cpu_capability() != "DEFAULT";
  return available;
}

bool fused_group_norm_applies(const torch::Tensor& x, int64_t groups, const torch::Tensor& weight,
                              const torch::Tensor& bias, const torch::Tensor& shift) {
  auto is_f32_cpu = [](const torch::Tensor& t) { return t.is_cpu() && t.scalar_type() == torch::kFloat32; };
  return avx2_group_norm_available() && x.dim() == 4 && is_f32_cpu(x) &&
         x.is_contiguous(at::MemoryFormat::ChannelsLast) && x.size(1) % 8 == 0 && x.size(1) % groups == 0 &&
         x.size(2) * x.size(3) > 0 && weight.defined() && bias.defined() && is_f32_cpu(weight) && is_f32_cpu(bias) &&
         (!shift.defined() || (is_f32_cpu(shift) && shift.numel() == x.size(0) * x.size(1)));
}

namespace {

GroupNormShape shape_of(const torch::Tensor& x, int64_t groups, double eps, bool silu) {
  return {x.size(2) * x.size(3), x.size(1), groups, eps, silu};
}

class GroupNormSilu : public torch::autograd::Function<GroupNormSilu> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias, const torch::Tensor& shift,
                               int64_t groups, double eps, bool silu) {
    const int64_t N = x.size(0), C = x.size(1);
    const auto s = shape_of(x, groups, eps, silu);
    auto w = weight.contiguous(), b = bias.contiguous();
    auto e = shift.numel() ? shift.reshape({N, C}).contiguous() : torch::Tensor();
    auto y = torch::empty_like(x, at::MemoryFormat::ChannelsLast);
    auto mean = torch::empty({N, groups}, x.options());
    auto rstd = torch::empty({N, groups}, x.options());
    const float* xp = x.const_data_ptr<float>();
    const float* ep = e.defined() ? e.const_data_ptr<float>() : nullptr;
    float* yp = y.mutable_data_ptr<float>();
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> fscratch(kForwardScratch * C);
      std::vector<double> dscratch(kForwardScratch * C);
      for (int64_t n = begin; n < end; ++n)
        group_norm_forward_avx2(s, xp + n * s.hw * C, w.const_data_ptr<float>(), b.const_data_ptr<float>(),
                                         ep ? ep + n * C : nullptr, yp + n * s.hw * C,
                                         mean.mutable_data_ptr<float>() + n * groups,
                                         rstd.mutable_data_ptr<float>() + n * groups, fscratch.data(),
                                         dscratch.data());
    });
    // An undefined tensor cannot be saved: the shift is saved only when there is one.
    ctx->save_for_backward(e.defined() ? torch::autograd::variable_list{x, w, b, mean, rstd, e}
                                       : torch::autograd::variable_list{x, w, b, mean, rstd});
    ctx->saved_data["shift_shape"] = shift.sizes().vec();
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["silu"] = silu;
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1], &b = saved[2], &mean = saved[3], &rstd = saved[4];
    const auto e = saved.size() > 5 ? saved[5] : torch::Tensor();
    const int64_t groups = ctx->saved_data["groups"].toInt();
    const auto s = shape_of(x, groups, ctx->saved_data["eps"].toDouble(), ctx->saved_data["silu"].toBool());
    const int64_t N = x.size(0), C = x.size(1);
    auto dy = grads[0].contiguous(at::MemoryFormat::ChannelsLast);
    auto dx = torch::empty_like(x, at::MemoryFormat::ChannelsLast);
    auto dgamma = torch::empty({N, C}, x.options());
    auto dbeta = torch::empty({N, C}, x.options());
    auto dshift = e.defined() ? torch::empty({N, C}, x.options()) : torch::Tensor();
    const float* ep = e.defined() ? e.const_data_ptr<float>() : nullptr;
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> fscratch(kBackwardScratch * C);
      std::vector<double> dscratch(kBackwardScratch * C);
      for (int64_t n = begin; n < end; ++n)
        group_norm_backward_avx2(
            s, dy.const_data_ptr<float>() + n * s.hw * C, x.const_data_ptr<float>() + n * s.hw * C,
            w.const_data_ptr<float>(), b.const_data_ptr<float>(), ep ? ep + n * C : nullptr,
            mean.const_data_ptr<float>() + n * groups, rstd.const_data_ptr<float>() + n * groups,
            dx.mutable_data_ptr<float>() + n * s.hw * C, dgamma.mutable_data_ptr<float>() + n * C,
            dbeta.mutable_data_ptr<float>() + n * C, ep ? dshift.mutable_data_ptr<float>() + n * C : nullptr,
            fscratch.data(), dscratch.data());
    });
    if (dshift.defined()) dshift = dshift.reshape(ctx->saved_data["shift_shape"].toIntVector());
    return {dx, dgamma.sum(0), dbeta.sum(0), dshift, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor fused_group_norm_silu(const torch::Tensor& x, int64_t groups, const torch::Tensor& weight,
                                    const torch::Tensor& bias, double eps, const torch::Tensor& shift, bool silu) {
  // Custom autograd functions need defined inputs: no shift is an empty tensor.
  return GroupNormSilu::apply(x, weight, bias, shift.defined() ? shift : torch::empty({0}), groups, eps, silu);
}

}  // namespace fm::kernels
