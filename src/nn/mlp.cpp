#include "nn/mlp.h"

namespace fm {

MlpVelocity::MlpVelocity(const MlpConfig& cfg, int64_t dim) : time_features_(cfg.time_features) {
  net_ = torch::nn::Sequential();
  int64_t in = dim + cfg.time_features;
  for (int64_t i = 0; i < cfg.depth; ++i) {
    net_->push_back(torch::nn::Linear(in, cfg.hidden));
    net_->push_back(torch::nn::SiLU());
    in = cfg.hidden;
  }
  net_->push_back(torch::nn::Linear(in, dim));
  register_module("net", net_);
}

torch::Tensor MlpVelocity::forward(const torch::Tensor& t, const torch::Tensor& x, const torch::Tensor&) {
  // Times in [0, 1] are spread over the embedding's frequencies by scaling; max period 10000 as in ADM.
  auto emb = timestep_embedding(t.to(x.dtype()) * 1000.0, time_features_).to(x.dtype());
  return net_->forward(torch::cat({x, emb}, 1));
}

}  // namespace fm
