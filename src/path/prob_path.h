#pragma once
// Conditional probability paths x_t = alpha_t x1 + sigma_t x0 with noise x0 ~ N(0, I) at t=0 and data x1 at t=1
// (the paper's convention, as in facebookresearch/flow_matching). The conditional velocity is the time derivative of
// that flow map, u_t(x_t | x1) = alpha'_t x1 + sigma'_t x0. Every path here is one of flow_matching's affine
// schedulers (alpha_t, sigma_t); the paper's two (CondOT, VP) and the cosine, polynomial and linear-VP schedulers.
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

  // The closed interval of times on which all four coefficients are finite in float32. A path with a singular end
  // (an infinite derivative there) narrows it by kSingularEndGap; training and sampling times are clamped into it.
  virtual double t_min() const { return 0.0; }
  virtual double t_max() const { return 1.0; }
  torch::Tensor clamp_time(const torch::Tensor& t) const { return t.clamp(t_min(), t_max()); }

  // x0, x1: [B, ...]; t: [B]. Broadcasts t over the trailing dimensions.
  PathSample sample(const torch::Tensor& x0, const torch::Tensor& x1, const torch::Tensor& t) const;
};

// How far training and sampling stay from a singular end (score_sde stops its VP likelihood ODE at 1e-5 as well).
constexpr double kSingularEndGap = 1e-5;

// Reshapes t [B] to [B, 1, ..., 1] so that it broadcasts over a batch shaped like `like`.
torch::Tensor broadcast_time(const torch::Tensor& t, const torch::Tensor& like);

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
// sigma_t = sqrt(1 - alpha_t^2), T(s) = beta_min s + (beta_max - beta_min) s^2 / 2. sigma_t is computed as
// sqrt(-expm1(-T)): 1 - alpha^2 cancels to 0 in float32 within ~6e-7 of t=1 and made d_sigma infinite. d_sigma still
// grows like 1/sqrt(1-t) at the data end, so t_max = 1 - kSingularEndGap.
class VPPath : public ProbPath {
 public:
  VPPath(double beta_min = 0.1, double beta_max = 20.0) : beta_min_(beta_min), beta_max_(beta_max) {}
  torch::Tensor alpha(const torch::Tensor& t) const override;
  torch::Tensor sigma(const torch::Tensor& t) const override;
  torch::Tensor d_alpha(const torch::Tensor& t) const override;
  torch::Tensor d_sigma(const torch::Tensor& t) const override;
  double t_max() const override { return 1.0 - kSingularEndGap; }

 private:
  torch::Tensor big_t(const torch::Tensor& s) const { return beta_min_ * s + 0.5 * (beta_max_ - beta_min_) * s * s; }
  torch::Tensor beta(const torch::Tensor& s) const { return beta_min_ + (beta_max_ - beta_min_) * s; }
  double beta_min_, beta_max_;
};

// flow_matching's CosineScheduler: alpha_t = sin(pi t / 2), sigma_t = cos(pi t / 2). alpha^2 + sigma^2 = 1, so it is
// variance preserving; with torchcfm's default sigma = 0 it is also torchcfm's VariancePreservingConditionalFlowMatcher
// (mu_t = cos(pi t / 2) x0 + sin(pi t / 2) x1), which `path.type` "torchcfm_vp" names.
class CosinePath : public ProbPath {
 public:
  torch::Tensor alpha(const torch::Tensor& t) const override { return torch::sin(M_PI_2 * t); }
  torch::Tensor sigma(const torch::Tensor& t) const override { return torch::cos(M_PI_2 * t); }
  torch::Tensor d_alpha(const torch::Tensor& t) const override { return M_PI_2 * torch::cos(M_PI_2 * t); }
  torch::Tensor d_sigma(const torch::Tensor& t) const override { return -M_PI_2 * torch::sin(M_PI_2 * t); }
};

// flow_matching's PolynomialConvexScheduler: alpha_t = t^n, sigma_t = 1 - t^n. For n < 1, d/dt t^n = n t^(n-1) is
// infinite at t=0 (the noise end), so t_min = kSingularEndGap there.
class PolynomialPath : public ProbPath {
 public:
  explicit PolynomialPath(double n) : n_(n) {}
  torch::Tensor alpha(const torch::Tensor& t) const override { return torch::pow(t, n_); }
  torch::Tensor sigma(const torch::Tensor& t) const override { return 1.0 - torch::pow(t, n_); }
  torch::Tensor d_alpha(const torch::Tensor& t) const override { return n_ * torch::pow(t, n_ - 1.0); }
  torch::Tensor d_sigma(const torch::Tensor& t) const override { return -n_ * torch::pow(t, n_ - 1.0); }
  double t_min() const override { return n_ < 1.0 ? kSingularEndGap : 0.0; }

 private:
  double n_;
};

// flow_matching's LinearVPScheduler: alpha_t = t, sigma_t = sqrt(1 - t^2), d_sigma = -t / sigma_t, which is infinite
// at t=1 (the data end): t_max = 1 - kSingularEndGap. 1 - t^2 is computed as (1 - t)(1 + t), exact near t=1.
class LinearVPPath : public ProbPath {
 public:
  torch::Tensor alpha(const torch::Tensor& t) const override { return t; }
  torch::Tensor sigma(const torch::Tensor& t) const override { return torch::sqrt((1.0 - t) * (1.0 + t)); }
  torch::Tensor d_alpha(const torch::Tensor& t) const override { return torch::ones_like(t); }
  torch::Tensor d_sigma(const torch::Tensor& t) const override { return -t / sigma(t); }
  double t_max() const override { return 1.0 - kSingularEndGap; }
};

std::unique_ptr<ProbPath> make_path(const PathConfig& cfg);

// Training times t in [0, 1]: uniform; logit-normal t = sigmoid(loc + scale n), n ~ N(0, 1); or U-shaped.
torch::Tensor sample_times(const TimeConfig& cfg, int64_t n, const torch::TensorOptions& opts);

// The time t at which the path's noise-to-signal ratio sigma_t / alpha_t equals `ratio` (EDM's noise level sigma of
// the same marginal up to scale): 1 / (1 + ratio) on CondOT with sigma_min = 0. The ratio falls from infinity at the
// noise end to sigma_1 / alpha_1 at the data end on every path here; found by bisection on [t_min, t_max] and clamped
// there.
double time_at_noise_ratio(const ProbPath& path, double ratio);

// The U-shaped time distribution of Lee et al. 2024 ("Improving the Training of Rectified Flows", and
// their code's t_dist.py): p(t) = a (e^(a t) + e^(a (1 - t))) / (2 (e^a - 1)) on [0, 1], proportional to
// exp(a u) + exp(-a u) with u = t - 1/2: weight on both ends, where a 2-rectified flow's loss is largest. Sampled
// exactly: T by the inverse CDF of the truncated exponential e^(a T) on [0, 1], T = log(1 + U (e^a - 1)) / a, then
// t = T or 1 - T with probability 1/2 each. a = 0 is the uniform distribution. The density is symmetric, so it is the
// same in fm's time (noise at 0, data at 1) and in theirs (data at 0).
torch::Tensor sample_u_shaped(double a, int64_t n, const torch::TensorOptions& opts);
double u_shaped_pdf(double a, double t);
double u_shaped_cdf(double a, double t);

}  // namespace fm
