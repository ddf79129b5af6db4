#include "nn/layers.h"

#include "kernels/kernels.h"

namespace fm {

torch::Tensor Conv2dImpl::forward(const torch::Tensor& x) { return kernels::conv2d(*this, x); }

GroupNorm32Impl::GroupNorm32Impl(int64_t channels, bool then_silu) : silu_(then_silu) {
  weight = register_parameter("weight", torch::ones({channels}));
  bias = register_parameter("bias", torch::zeros({channels}));
}

torch::Tensor GroupNorm32Impl::forward(const torch::Tensor& x, const torch::Tensor& shift) {
  // At least float32: half and bfloat16 are promoted, float64 (gradient checks) is kept.
  const auto dt = c10::promoteTypes(x.scalar_type(), torch::kFloat32);
  const auto s = shift.defined() ? shift.to(dt) : shift;
  return kernels::group_norm_silu(x.to(dt), kGroups, weight.to(dt), bias.to(dt), 1e-5, s, silu_).to(x.dtype());
}

}  // namespace fm
