#pragma once
#include <vector>

#include <torch/torch.h>

namespace fm {

// The global L2 norm of the parameters' gradients (a device scalar, no host sync; zero when none has a gradient),
// and, when max_norm > 0, the gradients scaled by min(1, max_norm / (norm + 1e-6)) as torch.nn.utils.clip_grad_norm_.
torch::Tensor clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm);

}  // namespace fm
