#pragma once
// Jacobian-vector products of a function of tensors: the value f(p) and the directional derivative
// J_f(p) . d = d/de f(p + e d) at e = 0, for f built from LibTorch's differentiable ops. MeanFlow's target needs the
// total derivative of the network along the flow (train/meanflow_objective.h). Two ways give the same numbers:
//  - forward mode: the primals enter as dual tensors (primal, tangent) and every op carries its tangent along, in one
//    pass that costs about two forward passes (LibTorch's forward-mode AD, torch/csrc/autograd/forward_grad.h);
//  - double backward: g(w) = J^T w is a vector-Jacobian product built with its own graph, and J d = d/dw <g(w), d>,
//    which costs a forward and two backward passes and needs every op to be twice differentiable.
// fm's own CPU kernels and LibTorch's fused attention support neither; kernels/kernels.h routes such calls to
// LibTorch's plain differentiable ops.
#include <functional>
#include <vector>

#include <torch/torch.h>

namespace fm {

using TensorFunction = std::function<torch::Tensor(const std::vector<torch::Tensor>& inputs)>;

struct JvpResult {
  torch::Tensor value;    // f(primals), differentiable with respect to f's parameters when grad mode is on
  torch::Tensor tangent;  // J_f(primals) . tangents, detached
};

// Forward mode. Opens fm's dual level for the call (LibTorch allows one at a time: throws if one is open).
JvpResult jvp_forward(const TensorFunction& f, const std::vector<torch::Tensor>& primals,
                      const std::vector<torch::Tensor>& tangents);

// Double backward, with fm's kernels and fused attention set aside for the call (kernels::TwiceDifferentiableScope).
JvpResult jvp_double_backward(const TensorFunction& f, const std::vector<torch::Tensor>& primals,
                              const std::vector<torch::Tensor>& tangents);

}  // namespace fm
