#pragma once
// The velocity field for 2-D toys: an MLP on [x, embedding(t)] with SiLU activations.
#include "nn/velocity_field.h"

namespace fm {

class MlpVelocity : public VelocityField {
 public:
  MlpVelocity(const MlpConfig& cfg, int64_t dim);
  torch::Tensor forward(const torch::Tensor& t, const torch::Tensor& x, const torch::Tensor& labels) override;

 private:
  int64_t time_features_, x_frequencies_;
  torch::nn::Sequential net_{nullptr};
};

}  // namespace fm
