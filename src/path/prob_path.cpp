#include "path/prob_path.h"

#include <algorithm>
#include <cmath>

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
    case TimeSampler::u_shaped:
      return sample_u_shaped(cfg.u_shaped_a, n, opts);
  }
  throw std::logic_error("sample_times: unhandled time.sampler");
}

double time_at_noise_ratio(const ProbPath& path, double ratio) {
  auto ratio_at = [&](double t) {
    auto tt = torch::tensor(t, torch::kFloat64);
    return (path.sigma(tt) / path.alpha(tt)).item<double>();
  };
  double lo = path.t_min(), hi = path.t_max();  // ratio_at(lo) >= ratio >= ratio_at(hi) once clamped
  if (!(ratio < ratio_at(lo))) return lo;
  if (!(ratio > ratio_at(hi))) return hi;
  for (int i = 0; i < 200 && hi - lo > 1e-15; ++i) {
    const double mid = 0.5 * (lo + hi);
    (ratio_at(mid) > ratio ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

torch::Tensor sample_u_shaped(double a, int64_t n, const torch::TensorOptions& opts) {
  auto u = torch::rand({n}, opts);
  auto mirror = torch::rand({n}, opts) < 0.5;
  auto t = a > 0.0 ? (torch::log1p(u * std::expm1(a)) / a).clamp(0.0, 1.0) : u;
  return torch::where(mirror, 1.0 - t, t);
}

double u_shaped_pdf(double a, double t) {
  if (t < 0.0 || t > 1.0) return 0.0;
  if (a == 0.0) return 1.0;
  return a * (std::exp(a * t) + std::exp(a * (1.0 - t))) / (2.0 * std::expm1(a));
}

double u_shaped_cdf(double a, double t) {
  t = std::min(1.0, std::max(0.0, t));
  if (a == 0.0) return t;
  // The two halves: (e^(a t) - 1) / (e^a - 1) and 1 - (e^(a (1 - t)) - 1) / (e^a - 1), averaged.
  return 0.5 * (1.0 + (std::expm1(a * t) - std::expm1(a * (1.0 - t))) / std::expm1(a));
}

}  // namespace fm
