#include "path/prob_path.h"

namespace fm {

PathSample ProbPath::sample(const torch::Tensor& x0, const torch::Tensor& x1, const torch::Tensor& t) const {
  std::vector<int64_t> shape(x1.dim(), 1);
  shape[0] = t.size(0);
  auto tt = t.to(x1.dtype()).view(shape);
  return {alpha(tt) * x1 + sigma(tt) * x0, d_alpha(tt) * x1 + d_sigma(tt) * x0};
}

torch::Tensor VPPath::alpha(const torch::Tensor& t) const { return torch::exp(-0.5 * big_t(1.0 - t)); }
torch::Tensor VPPath::sigma(const torch::Tensor& t) const {
  auto a = alpha(t);
  return torch::sqrt(1.0 - a * a);
}
// d/dt exp(-T(1-t)/2) = beta(1-t)/2 * alpha_t.
torch::Tensor VPPath::d_alpha(const torch::Tensor& t) const { return 0.5 * beta(1.0 - t) * alpha(t); }
torch::Tensor VPPath::d_sigma(const torch::Tensor& t) const { return -alpha(t) * d_alpha(t) / sigma(t); }

std::unique_ptr<ProbPath> make_path(const PathConfig& cfg) {
  if (cfg.type == "vp") return std::make_unique<VPPath>(cfg.beta_min, cfg.beta_max);
  return std::make_unique<CondOTPath>(cfg.sigma_min);
}

torch::Tensor sample_times(const TimeConfig& cfg, int64_t n, const torch::TensorOptions& opts) {
  if (cfg.sampler == "logit_normal") return torch::sigmoid(cfg.loc + cfg.scale * torch::randn({n}, opts));
  return torch::rand({n}, opts);
}

}  // namespace fm
