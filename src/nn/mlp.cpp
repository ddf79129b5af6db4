#include "nn/mlp.h"

namespace fm {

MlpVelocity::MlpVelocity(const MlpConfig& cfg, int64_t dim)
    : time_features_(cfg.time_features), x_frequencies_(cfg.x_frequencies), second_time_(cfg.second_time) {
  net_ = torch::nn::Sequential();
  const int64_t per_time = 1 + cfg.time_features / 2 * 2;
  int64_t in = dim * (1 + 2 * cfg.x_frequencies) + per_time * (cfg.second_time ? 2 : 1);
  for (int64_t i = 0; i < cfg.depth; ++i) {
    net_->push_back(torch::nn::Linear(in, cfg.hidden));
    net_->push_back(torch::nn::SiLU());
    in = cfg.hidden;
  }
  net_->push_back(torch::nn::Linear(in, dim));
  register_module("net", net_);
}

torch::Tensor MlpVelocity::run(const torch::Tensor& t, const torch::Tensor& interval, const torch::Tensor& x) {
  // t itself and sinusoids of pi k t, k = 1..K: smooth over [0, 1] (ADM's embedding is tuned for integer diffusion
  // steps) and never periodic on it, so that noise (t=0) and data (t=1) can't look alike to the network.
  auto k = torch::arange(1, time_features_ / 2 + 1, x.options()).unsqueeze(0);
  std::vector<torch::Tensor> in{x};
  for (const auto* s : {&t, &interval}) {
    if (!s->defined()) continue;
    auto tt = s->to(x.dtype()).unsqueeze(1);
    in.insert(in.end(), {tt, torch::sin(M_PI * k * tt), torch::cos(M_PI * k * tt)});
  }
  if (x_frequencies_ > 0) {
    // Sinusoids of the coordinates let a small MLP draw sharp edges (such as the checkerboard's) in few steps.
    auto f = 0.5 * torch::pow(2.0, torch::arange(x_frequencies_, x.options()));
    auto arg = (x.unsqueeze(2) * f).flatten(1);
    in.push_back(torch::sin(arg));
    in.push_back(torch::cos(arg));
  }
  return net_->forward(torch::cat(in, 1));
}

torch::Tensor MlpVelocity::forward(const torch::Tensor& t, const torch::Tensor& x, const torch::Tensor&) {
  if (second_time_) return forward_mean(t, t, x, {});
  return run(t, {}, x);
}

torch::Tensor MlpVelocity::forward_mean(const torch::Tensor& t, const torch::Tensor& r, const torch::Tensor& x,
                                        const torch::Tensor& labels) {
  if (!second_time_) return VelocityField::forward_mean(t, r, x, labels);
  return run(t, r - t, x);
}

}  // namespace fm
