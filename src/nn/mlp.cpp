#include "nn/mlp.h"

namespace fm {

MlpVelocity::MlpVelocity(const MlpConfig& cfg, int64_t dim)
    : time_features_(cfg.time_features), x_frequencies_(cfg.x_frequencies) {
  net_ = torch::nn::Sequential();
  int64_t in = dim * (1 + 2 * cfg.x_frequencies) + cfg.time_features / 2 * 2;
  for (int64_t i = 0; i < cfg.depth; ++i) {
    net_->push_back(torch::nn::Linear(in, cfg.hidden));
    net_->push_back(torch::nn::SiLU());
    in = cfg.hidden;
  }
  net_->push_back(torch::nn::Linear(in, dim));
  register_module("net", net_);
}

torch::Tensor MlpVelocity::forward(const torch::Tensor& t, const torch::Tensor& x, const torch::Tensor&) {
  // Fourier features of t at whole frequencies 1..K: smooth in t over [0, 1], unlike ADM's embedding, whose
  // frequencies are tuned for integer diffusion steps.
  auto tt = t.to(x.dtype()).unsqueeze(1);
  auto k = torch::arange(1, time_features_ / 2 + 1, x.options()).unsqueeze(0);
  auto emb = torch::cat({torch::sin(2 * M_PI * k * tt), torch::cos(2 * M_PI * k * tt)}, 1);
  std::vector<torch::Tensor> in{x, emb};
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
