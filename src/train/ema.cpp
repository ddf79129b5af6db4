#include "train/ema.h"

namespace fm {

Ema::Ema(torch::nn::Module& model, torch::nn::Module& ema, double decay)
    : model_params_(model.parameters()), ema_params_(ema.parameters()), model_buffers_(model.buffers()),
      ema_buffers_(ema.buffers()), decay_(decay) {
  TORCH_CHECK(model_params_.size() == ema_params_.size(), "EMA: model and average differ in structure");
  for (auto& p : ema_params_) p.set_requires_grad(false);
}

void Ema::update() {
  torch::NoGradGuard ng;
  // One fused call over all tensors: lerp(ema, model, 1 - decay).
  at::_foreach_lerp_(ema_params_, model_params_, 1.0 - decay_);
  for (size_t i = 0; i < ema_buffers_.size(); ++i) ema_buffers_[i].copy_(model_buffers_[i]);
}

void Ema::update(const torch::Tensor& found_inf) {
  torch::NoGradGuard ng;
  // _foreach_lerp_ takes a device weight only as one tensor per parameter: the same 0-dim tensor, broadcast. One fused
  // pass over the weights, where ema += w * (model - ema) would take three.
  // In the weights' dtype: a float64 average takes 1 - decay unrounded.
  auto w = (1.0 - found_inf.to(ema_params_.front().scalar_type())) * (1.0 - decay_);
  at::_foreach_lerp_(ema_params_, model_params_, std::vector<torch::Tensor>(ema_params_.size(), w));
  for (size_t i = 0; i < ema_buffers_.size(); ++i) ema_buffers_[i].copy_(model_buffers_[i]);
}

void Ema::reset() {
  torch::NoGradGuard ng;
  for (size_t i = 0; i < ema_params_.size(); ++i) ema_params_[i].copy_(model_params_[i]);
  for (size_t i = 0; i < ema_buffers_.size(); ++i) ema_buffers_[i].copy_(model_buffers_[i]);
}

}  // namespace fm
