#pragma once
// A learned velocity field v(t, x[, class]). Time t is in [0, 1] with noise at t=0 and data at t=1.
#include <memory>
#include <vector>

#include <torch/torch.h>

#include "config/config.h"
#include "path/prob_path.h"
#include "path/target.h"

namespace fm {

class VelocityField : public torch::nn::Module {
 public:
  // t: [B] float; x: [B, ...]; labels: [B] int64 (num_classes = the null label) or an undefined tensor.
  virtual torch::Tensor forward(const torch::Tensor& t, const torch::Tensor& x, const torch::Tensor& labels) = 0;
  torch::Tensor operator()(const torch::Tensor& t, const torch::Tensor& x, const torch::Tensor& labels = {}) {
    return forward(t, x, labels);
  }
  virtual int64_t num_classes() const { return 0; }
  // The average velocity from time t to time r >= t, u(x, t, r) = (1 / (r - t)) * integral_t^r v(x_s, s) ds along the
  // flow through x at time t (MeanFlow, Geng et al. 2025, in fm's times: noise at 0, data at 1), so that
  // x_r = x_t + (r - t) u(x_t, t, r); at r = t it is the velocity v(x, t), which forward() returns for such a network.
  // t, r: [B]. Only a network with a second time (has_second_time(): model.mlp/unet.second_time) has it; the others
  // throw std::logic_error.
  virtual torch::Tensor forward_mean(const torch::Tensor& t, const torch::Tensor& r, const torch::Tensor& x,
                                     const torch::Tensor& labels);
  virtual bool has_second_time() const { return false; }
  // The network's own output, which the training loss compares with model.target's target; forward() is always a
  // velocity. The same for a network that predicts velocity.
  virtual torch::Tensor prediction(const torch::Tensor& t, const torch::Tensor& x, const torch::Tensor& labels) {
    return forward(t, x, labels);
  }
};

// A network that predicts noise, data or a score, seen as a velocity field through the path's alpha_t, sigma_t (see
// path/target.h), so that sampling and likelihood work unchanged. Times are clamped into target_time_range.
class TargetVelocity : public VelocityField {
 public:
  TargetVelocity(std::shared_ptr<VelocityField> net, Target target, std::shared_ptr<const ProbPath> path);
  torch::Tensor forward(const torch::Tensor& t, const torch::Tensor& x, const torch::Tensor& labels) override;
  torch::Tensor prediction(const torch::Tensor& t, const torch::Tensor& x, const torch::Tensor& labels) override {
    return net_->forward(t, x, labels);
  }
  int64_t num_classes() const override { return net_->num_classes(); }

 private:
  std::shared_ptr<VelocityField> net_;
  Target target_;
  std::shared_ptr<const ProbPath> path_;
  double t_lo_, t_hi_;
};

// Builds the configured network for data of shape `sample_shape` ({2} for toys, {C, H, W} for images), wrapped in a
// TargetVelocity unless model.target is velocity (then its parameter names are the bare network's, as before).
std::shared_ptr<VelocityField> make_velocity_field(const ModelConfig& cfg, const PathConfig& path,
                                                   const std::vector<int64_t>& sample_shape);
// For a velocity-target model only (throws InputError naming model.target otherwise).
std::shared_ptr<VelocityField> make_velocity_field(const ModelConfig& cfg, const std::vector<int64_t>& sample_shape);

// How a configured network is conditioned on classes: num_classes > 0 labels (the label num_classes is the null
// label of classifier-free guidance), trained with the null label in place of the class with probability
// class_dropout.
struct Conditioning {
  int64_t num_classes = 0;
  double class_dropout = 0.0;
  // Whether the null label (unconditional sampling, guidance, the unconditional likelihood) saw training.
  bool null_label_trained() const { return class_dropout > 0.0; }
};
Conditioning conditioning_of(const ModelConfig& cfg);

// Sinusoidal embedding of t as in ADM: [cos(t f), sin(t f)], f_i = exp(-ln(max_period) i / half).
torch::Tensor timestep_embedding(const torch::Tensor& t, int64_t dim, double max_period = 10000.0);

int64_t parameter_count(const torch::nn::Module& m);

}  // namespace fm
