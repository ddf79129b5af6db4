#pragma once
// A learned velocity field v(t, x[, class]). Time t is in [0, 1] with noise at t=0 and data at t=1.
#include <memory>
#include <vector>

#include <torch/torch.h>

#include "config/config.h"

namespace fm {

class VelocityField : public torch::nn::Module {
 public:
  // t: [B] float; x: [B, ...]; labels: [B] int64 (num_classes = the null label) or an undefined tensor.
  virtual torch::Tensor forward(const torch::Tensor& t, const torch::Tensor& x, const torch::Tensor& labels) = 0;
  torch::Tensor operator()(const torch::Tensor& t, const torch::Tensor& x, const torch::Tensor& labels = {}) {
    return forward(t, x, labels);
  }
  virtual int64_t num_classes() const { return 0; }
};

// Builds the configured network for data of shape `sample_shape` ({2} for toys, {C, H, W} for images).
std::shared_ptr<VelocityField> make_velocity_field(const ModelConfig& cfg, const std::vector<int64_t>& sample_shape);

// Sinusoidal embedding of t as in ADM: [cos(t f), sin(t f)], f_i = exp(-ln(max_period) i / half).
torch::Tensor timestep_embedding(const torch::Tensor& t, int64_t dim, double max_period = 10000.0);

int64_t parameter_count(const torch::nn::Module& m);

}  // namespace fm
