#include "path/prob_path.h"

namespace fm {

torch::Tensor broadcast_time(const torch::Tensor& t, const torch::Tensor& like) {
  std::vector<int64_t> shape(like.dim(), 1);
  shape[0] = t.size(0);
  return t.to(like.dtype()).view(shape);
}

PathSample ProbPath::sample(const torch::Tensor& x0, const torch::Tensor& x1, const torch::Tensor& t) const {
  auto tt = broadcast_time(t, x1);
  return {alpha(tt) * x1 + sigma(tt) * x0, d_alpha(tt) * x1 + d_sigma(tt) * x0};
}

torch::Tensor VPPath::alpha(const torch::Tensor& t) const { return torch::exp(-0.5 * big_t(1.0 - t)); }
torch::Tensor VPPath::sigma(const torch::Tensor& t) const { return torch::sqrt(-torch::expm1(-big_t(1.0 - t))); }
// d/dt exp(-T(1-t)/2) = beta(1-t)/2 * alpha_t; d/dt sqrt(1 - alpha^2) = -alpha alpha' / sigma.
torch::Tensor VPPath::d_alpha(const torch::Tensor& t) const { return 0.5 * beta(1.0 - t) * alpha(t); }
torch::Tensor VPPath::d_sigma(const torch::Tensor& t) const { return -alpha(t) * d_alpha(t) / sigma(t); }

std::unique_ptr<ProbPath> make_path(const PathConfig& cfg) {
  switch (cfg.type) {
    case PathType::cond_ot:
      return std::make_unique<CondOTPath>(cfg.sigma_min);
    case PathType::vp:
      return std::make_unique<VPPath>(cfg.beta_min, cfg.beta_max);
    case PathType::cosine:
    case PathType::torchcfm_vp:
      return std::make_unique<CosinePath>();
    case PathType::polynomial:
      return std::make_unique<PolynomialPath>(cfg.poly_n);
    case PathType::linear_vp:
      return std::make_unique<LinearVPPath>();
  }
  throw std::logic_error("make_path: unhandled path.type");
}

torch::Tensor sample_times(const TimeConfig& cfg, int64_t n, const torch::TensorOptions& opts) {
  switch (cfg.sampler) {
    case TimeSampler::uniform:
      return torch::rand({n}, opts);
    case TimeSampler::logit_normal:
      return torch::sigmoid(cfg.loc + cfg.scale * torch::randn({n}, opts));
  }
  throw std::logic_error("sample_times: unhandled time.sampler");
}

}  // namespace fm
