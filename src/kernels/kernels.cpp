#include "kernels/kernels.h"

#include <ATen/Parallel.h>

#include <atomic>
#include <cstdint>

#ifdef FM_CPU_KERNELS
#include "kernels/conv3x3.h"
#endif
#ifdef FM_HAVE_AVX2_KERNELS
#include "kernels/group_norm_silu.h"
#endif

namespace fm::kernels {

namespace {

thread_local bool twice_differentiable = false;

bool has_tangent(const torch::Tensor& t) { return t.defined() && t._fw_grad(/*level=*/0).defined(); }

// Whether a call on these tensors must run plain differentiable ops (see TwiceDifferentiableScope).
bool plain_ops_needed(std::initializer_list<const torch::Tensor*> tensors) {
  if (twice_differentiable) return true;
  for (const auto* t : tensors)
    if (has_tangent(*t)) return true;
  return false;
}

}  // namespace

TwiceDifferentiableScope::TwiceDifferentiableScope() : saved_(twice_differentiable) { twice_differentiable = true; }
TwiceDifferentiableScope::~TwiceDifferentiableScope() { twice_differentiable = saved_; }

torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
  if (plain_ops_needed({&q, &k, &v})) return std::get<0>(at::_scaled_dot_product_attention_math(q, k, v));
  return at::scaled_dot_product_attention(q, k, v);
}

torch::Tensor conv2d(torch::nn::Conv2dImpl& conv, const torch::Tensor& x) {
#ifdef FM_CPU_KERNELS
  if (!plain_ops_needed({&x, &conv.weight, &conv.bias}) && winograd_applies(conv, x)) return winograd_conv2d(conv, x);
#endif
  return conv.forward(x);
}

torch::Tensor group_norm_silu(const torch::Tensor& x, int64_t groups, const torch::Tensor& weight,
                              const torch::Tensor& bias, double eps, const torch::Tensor& shift, bool silu) {
#ifdef FM_HAVE_AVX2_KERNELS
  if (!plain_ops_needed({&x, &weight, &bias, &shift}) && fused_group_norm_applies(x, groups, weight, bias, shift))
    return fused_group_norm_silu(x, groups, weight, bias, eps, shift, silu);
#endif
  auto h = shift.defined() ? x + shift.reshape({x.size(0), x.size(1), 1, 1}) : x;
  // LibTorch's forward-mode derivative of group_norm views its input as contiguous, which a channels-last tangent is
  // not: such a call normalises a contiguous copy and returns the input's layout.
  const bool relayout = has_tangent(h) && !h.is_contiguous();
  auto y = torch::group_norm(relayout ? h.contiguous() : h, groups, weight, bias, eps);
  if (relayout) y = y.contiguous(x.suggest_memory_format());
  return silu ? torch::silu(y) : y;
}

bool fused_cpu_group_norm_available() {
#ifdef FM_HAVE_AVX2_KERNELS
  return avx2_group_norm_available();
#else
  return false;
#endif
}

bool prefers_channels_last(const torch::Device& device, const std::vector<int64_t>& sample_shape, bool training) {
  if (sample_shape.size() != 3) return false;
  // CUDA sampling keeps NCHW: it has not been measured against channels-last on a GPU.
  if (device.is_cuda()) return training;
  // Training and inference alike: the Winograd convolutions read channels-last and would copy NCHW tensors to it and
  // back.
  return device.is_cpu() && fused_cpu_group_norm_available();
}

void weights_to_channels_last(torch::nn::Module& model) {
  for (auto& p : model.parameters())
    if (p.dim() == 4) p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
}

int kernel_threads() {
#ifndef FM_CPU_KERNELS
  return 0;
#else
  // at::parallel_for is a header template: under LibTorch's OpenMP backend it starts threads only in files compiled
  // with OpenMP (CMakeLists.txt, FM_PARALLEL_KERNELS). One item per thread, grain 1: each thread that takes part
  // marks its id.
  const int64_t n = at::get_num_threads();
  std::atomic<uint64_t> seen{0};
  std::atomic<int> beyond{0};  // ids past 63, counted rather than marked
  at::parallel_for(0, n, 1, [&](int64_t, int64_t) {
    const int id = at::get_thread_num();
    if (id < 64)
      seen.fetch_or(uint64_t{1} << id);
    else
      beyond.fetch_add(1);
  });
  return __builtin_popcountll(seen.load()) + beyond.load();
#endif
}

}  // namespace fm::kernels
