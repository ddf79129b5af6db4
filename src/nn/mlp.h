#pragma once
// The velocity field for 2-D toys: an MLP on [x, embedding(t)] with SiLU activations.
#include "nn/velocity_field.h"

namespace fm {

class MlpVelocity : public VelocityField {
 public:
  MlpVelocity(const MlpConfig& cfg, int64_t dim);
  // With model.mlp.second_time, the velocity at t (forward_mean at r = t).
  torch::Tensor forward(const torch::Tensor& t, const torch::Tensor& x, const torch::Tensor& labels) override;
  // With model.mlp.second_time: the average velocity from t to r (nn/velocity_field.h); the interval r - t is fed
  // beside t, with sinusoids of its own.
  torch::Tensor forward_mean(const torch::Tensor& t, const torch::Tensor& r, const torch::Tensor& x,
                             const torch::Tensor& labels) override;
  bool has_second_time() const override { return second_time_; }

 private:
  // The network on x and the time features of t (and of the interval, when defined).
  torch::Tensor run(const torch::Tensor& t, const torch::Tensor& interval, const torch::Tensor& x);

  int64_t time_features_, x_frequencies_;
  bool second_time_;
  torch::nn::Sequential net_{nullptr};
};

}  // namespace fm
