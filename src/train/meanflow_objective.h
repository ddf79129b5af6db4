#pragma once
// MeanFlow (Geng, Deng, Bai, Kolter, He 2025, "Mean Flows for One-step Generative Modeling"): the network learns the
// average velocity u(x, t, r) from time t to time r (nn/velocity_field.h, forward_mean) through the MeanFlow identity,
// in fm's times
//     u(x_t, t, r) = v(x_t, t) + (r - t) d/dt u(x_t, t, r),    d/dt u = v . grad_x u + du/dt,
// with the path's conditional velocity v = u_t in place of the marginal one (the paper's eq. 9 and 10). The total
// derivative is a Jacobian-vector product with tangent (v, 1, 0) in (x, t, r) (train/jvp.h), the right side is the
// target under a stop-gradient, and the squared error |u - target|^2 (summed over a sample) of each row is weighted by
// the paper's adaptive weight 1 / (|u - target|^2 + c)^p, also under a stop-gradient.
//
// Times. The paper puts data at 0 and noise at 1 and writes u(z, r, t) for the average over [r, t] with r <= t; fm puts
// noise at 0 and data at 1, everywhere. Paper time s is fm time 1 - s, so the paper's pair (r, t) is fm's
// (t, r) = (1 - t_paper, 1 - r_paper), fm's t <= r, and the paper's average velocity is minus fm's: its step
// z_r = z_t - (t - r) u is fm's x_r = x_t + (r - t) u. The identity above is the paper's u = v - (t - r) du/dt under
// this change. paper_to_fm_times is the one place that translates: objective.meanflow's times (the (r, t) sampler,
// the guidance interval) are the paper's, so that its numbers are copied unchanged.
#include "train/objective.h"

namespace fm {

// A pair of fm times per row: t (where x lies) <= r (where the step lands), noise at 0, data at 1.
struct MeanFlowTimes {
  torch::Tensor t, r;
};

// fm's (t, r) of the paper's (r, t): t = 1 - t_paper, r = 1 - r_paper.
MeanFlowTimes paper_to_fm_times(const torch::Tensor& r_paper, const torch::Tensor& t_paper);

// The paper's (r, t) sampler, as fm times: t_paper = sigmoid(t_loc + t_scale n1) and r_paper = sigmoid(r_loc +
// r_scale n2) with n1, n2 ~ N(0, 1), sorted so that r_paper <= t_paper, then r_paper = t_paper on a share
// equal_share of the rows (each row drawn alone). n rows of opts' dtype and device, from its default generator.
MeanFlowTimes sample_mean_flow_times(const MeanFlowConfig& c, int64_t n, const torch::TensorOptions& opts);

// The mean over rows of w * err with w = 1 / (err + c)^p under a stop-gradient (the paper's adaptive weight; p = 0 is
// the plain squared error), err [B] the squared error of each row.
torch::Tensor adaptive_weighted_mean(const torch::Tensor& err, double p, double c);

class MeanFlowObjective : public Objective {
 public:
  // Checks the combination of keys (throws InputError naming the key): a network with a second time predicting
  // velocity, a coupling without bridge noise, guidance only for a class-conditional model with label dropout.
  MeanFlowObjective(const Config& cfg, const ProbPath& path, const Conditioning& cond);
  // Needs the average velocity: throws std::logic_error (call loss_from).
  torch::Tensor loss(const Batch& batch, const Predict& predict, RowShard shard = {}) const override;
  torch::Tensor loss_from(const Batch& batch, const NetworkCalls& net, RowShard shard = {}) const override;
  bool needs_host() const override { return path_cfg_.coupling != Coupling::independent; }

  // The stop-gradient target v + (r - t) d/dt u of rows (x_t, t, r) with velocity v, and the network's u there (with
  // its graph). Public for the tests, which compare it with closed forms.
  struct Prediction {
    torch::Tensor u, target;
  };
  Prediction predict_and_target(const PredictMean& mean, const torch::Tensor& x_t, const torch::Tensor& t,
                                const torch::Tensor& r, const torch::Tensor& v, const torch::Tensor& labels) const;

 private:
  // omega v + (1 - omega - kappa) u(x_t, t, t | null) + kappa u(x_t, t, t | c) where guidance applies (the paper's
  // eq. 19 and 21: the velocity field of classifier-free guidance folded into the target), v elsewhere.
  torch::Tensor guided_velocity(const PredictMean& mean, const torch::Tensor& x_t, const torch::Tensor& t,
                                const torch::Tensor& v, const torch::Tensor& labels,
                                const torch::Tensor& dropped) const;
  bool guided() const { return mf_.omega != 1.0 || mf_.kappa != 0.0; }

  PathConfig path_cfg_;
  MeanFlowConfig mf_;
  const ProbPath& path_;
  Conditioning cond_;
};

}  // namespace fm
