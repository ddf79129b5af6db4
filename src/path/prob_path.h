#pragma once
// Conditional probability paths x_t = alpha_t x1 + sigma_t x0 with noise x0 ~ N(0, I) at t=0 and data x1 at t=1
// (the paper's convention, as in facebookresearch/flow_matching). The conditional velocity is the time derivative of
// that flow map, u_t(x_t | x1) = alpha'_t x1 + sigma'_t x0.
#include <memory>
#include <torch/torch.h>

#include "config/config.h"

namespace fm {

struct PathSample {
  torch::Tensor x_t;  // the point on the path
  torch::Tensor u_t;  // the conditional target velocity at x_t
};

class ProbPath {
 public:
  virtual ~ProbPath() = default;
  // Coefficients as tensors of t (any shape); derivatives are d/dt.
  virtual torch::Tensor alpha(const torch::Tensor& t) const = 0;
  virtual torch::Tensor sigma(const torch::Tensor& t) const = 0;
  virtual torch::Tensor d_alpha(const torch::Tensor& t) const = 0;
  virtual torch::Tensor d_sigma(const torch::Tensor& t) const = 0;

  // x0, x1: [B, ...]; t: [B]. Broadcasts t over the trailing dimensions.
  PathSample sample(const torch::Tensor& x0, const torch::Tensor& x1, const torch::Tensor& t) const;
};

// The paper's OT path: mu_t = t x1, sigma_t = 1 - (1 - sigma_min) t.
class CondOTPath : public ProbPath {
 public:
  explicit CondOTPath(double sigma_min = 0.0) : sigma_min_(sigma_min) {}
  torch::Tensor alpha(const torch::Tensor& t) const override { return t; }
  torch::Tensor sigma(const torch::Tensor& t) const override { return 1.0 - (1.0 - sigma_min_) * t; }
  torch::Tensor d_alpha(const torch::Tensor& t) const override { return torch::ones_like(t); }
  torch::Tensor d_sigma(const torch::Tensor& t) const override { return torch::full_like(t, -(1.0 - sigma_min_)); }

 private:
  double sigma_min_;
};

// The paper's VP diffusion path with time reversed so that data sits at t=1: alpha_t = exp(-T(1-t)/2),
// sigma_t = sqrt(1 - alpha_t^2), T(s) = beta_min s + (beta_max - beta_min) s^2 / 2.
class VPPath : public ProbPath {
 public:
  VPPath(double beta_min = 0.1, double beta_max = 20.0) : beta_min_(beta_min), beta_max_(beta_max) {}
  torch::Tensor alpha(const torch::Tensor& t) const override;
  torch::Tensor sigma(const torch::Tensor& t) const override;
  torch::Tensor d_alpha(const torch::Tensor& t) const override;
  torch::Tensor d_sigma(const torch::Tensor& t) const override;

 private:
  torch::Tensor big_t(const torch::Tensor& s) const { return beta_min_ * s + 0.5 * (beta_max_ - beta_min_) * s * s; }
  torch::Tensor beta(const torch::Tensor& s) const { return beta_min_ + (beta_max_ - beta_min_) * s; }
  double beta_min_, beta_max_;
};

std::unique_ptr<ProbPath> make_path(const PathConfig& cfg);

// Training times t in [0, 1): uniform, or logit-normal t = sigmoid(loc + scale n), n ~ N(0, 1).
torch::Tensor sample_times(const TimeConfig& cfg, int64_t n, const torch::TensorOptions& opts);

}  // namespace fm
