#include "nn/mlp.h"

namespace fm {

MlpVelocity::MlpVelocity(const MlpConfig& cfg, int64_t dim)
    : time_features_(cfg.time_features), x_frequencies_(cfg.x_frequencies) {
  net_ = torch::nn::Sequential();
  int64_t in = dim * (1 + 2 * cfg.x_frequencies) + 1 + cfg.time_features / 2 * 2;
  for (int64_t i = 0; i < cfg.depth; ++i) {
    net_->push_back(torch::nn::Linear(in, cfg.hidden));
    net_->push_back(torch::nn::SiLU());
    in = cfg.hidden;
  }
  net_->push_back(torch::nn::Linear(in, dim));
  register_module("net", net_);
}

torch::Tensor MlpVelocity::forward(const torch::Tensor& t, const torch::Tensor& x, const torch::Tensor&) {
  // t itself and sinusoids of pi k t, k = 1..K: smooth over [0, 1] (ADM's embedding is tuned for integer diffusion
  // steps) and never periodic on it, so that noise (t=0) and data (t=1) can't look alike to the network.
  auto tt = t.to(x.dtype()).unsqueeze(1);
  auto k = torch::arange(1, time_features_ / 2 + 1, x.options()).unsqueeze(0);
  std::vector<torch::Tensor> in{x, tt, torch::sin(M_PI * k * tt), torch::cos(M_PI * k * tt)};
  if (x_frequencies_ > 0) {
    // Sinusoids of the coordinates let a small MLP draw sharp edges (such as the checkerboard's) in few steps.
    auto f = 0.5 * torch::pow(2.0, torch::arange(x_frequencies_, x.options()));
    auto arg = (x.unsqueeze(2) * f).flatten(1);
    in.push_back(torch::sin(arg));
    in.push_back(torch::cos(arg));
  }
  return net_->forward(torch::cat(in, 1));
}

}  // namespace fm
