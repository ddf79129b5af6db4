#include "train/jvp.h"

#include <torch/csrc/autograd/forward_grad.h>

#include "kernels/kernels.h"

namespace fm {

namespace {

void check_pairs(const std::vector<torch::Tensor>& primals, const std::vector<torch::Tensor>& tangents) {
  TORCH_CHECK(primals.size() == tangents.size(), "jvp: ", primals.size(), " primals but ", tangents.size(),
              " tangents");
  for (size_t i = 0; i < primals.size(); ++i)
    TORCH_CHECK(primals[i].sizes() == tangents[i].sizes(), "jvp: primal ", i, " has shape ", primals[i].sizes(),
                " but its tangent ", tangents[i].sizes());
}

// A forward-mode level for the life of the object.
class DualLevel {
 public:
  DualLevel() : idx_(torch::autograd::ForwardADLevel::get_next_idx()) {}
  ~DualLevel() { torch::autograd::ForwardADLevel::release_idx(idx_); }
  DualLevel(const DualLevel&) = delete;
  DualLevel& operator=(const DualLevel&) = delete;
  int64_t idx() const { return static_cast<int64_t>(idx_); }

 private:
  uint64_t idx_;
};

}  // namespace

JvpResult jvp_forward(const TensorFunction& f, const std::vector<torch::Tensor>& primals,
                      const std::vector<torch::Tensor>& tangents) {
  check_pairs(primals, tangents);
  DualLevel level;
  std::vector<torch::Tensor> duals;
  duals.reserve(primals.size());
  for (size_t i = 0; i < primals.size(); ++i)
    duals.push_back(at::_make_dual(primals[i], tangents[i].to(primals[i].dtype()), level.idx()));
  auto [value, tangent] = at::_unpack_dual(f(duals), level.idx());
  // A function that does not depend on its inputs has no tangent: its derivative is zero.
  return {value, tangent.defined() ? tangent.detach() : torch::zeros_like(value).detach()};
}

JvpResult jvp_double_backward(const TensorFunction& f, const std::vector<torch::Tensor>& primals,
                              const std::vector<torch::Tensor>& tangents) {
  check_pairs(primals, tangents);
  kernels::TwiceDifferentiableScope plain_ops;
  torch::AutoGradMode grad(true);
  std::vector<torch::Tensor> inputs;
  inputs.reserve(primals.size());
  for (const auto& p : primals) inputs.push_back(p.detach().requires_grad_(true));
  auto value = f(inputs);
  auto w = torch::zeros_like(value).requires_grad_(true);
  // g = J^T w, kept differentiable in w; inputs the value does not depend on get no gradient (undefined).
  auto g = torch::autograd::grad({value}, inputs, {w}, /*retain_graph=*/true, /*create_graph=*/true,
                                 /*allow_unused=*/true);
  std::vector<torch::Tensor> gs, ds;
  for (size_t i = 0; i < g.size(); ++i)
    if (g[i].defined() && g[i].requires_grad()) gs.push_back(g[i]), ds.push_back(tangents[i].to(g[i].dtype()));
  if (gs.empty()) return {value, torch::zeros_like(value).detach()};
  auto jd = torch::autograd::grad(gs, {w}, ds, /*retain_graph=*/true, /*create_graph=*/false, /*allow_unused=*/true);
  return {value, jd[0].defined() ? jd[0].detach() : torch::zeros_like(value).detach()};
}

}  // namespace fm
