#include "train/grad_clip.h"

namespace fm {

torch::Tensor clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm) {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return torch::zeros({}, params.empty() ? torch::TensorOptions() : params[0].options());
  // In the gradients' dtype, at least float32, as torch.nn.utils.clip_grad_norm_ computes it.
  auto norms = torch::stack(at::_foreach_norm(grads, 2));
  auto total = norms.to(c10::promoteTypes(norms.scalar_type(), torch::kFloat32)).norm();
  if (max_norm > 0) at::_foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp_max(1.0));
  return total;
}

}  // namespace fm
