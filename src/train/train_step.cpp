#include "train/train_step.h"

#include <ATen/autocast_mode.h>

#include "dist/grad_reducer.h"
#include "dist/world.h"
#include "nn/memory_format.h"
#include "train/forward_rng.h"
#include "train/grad_clip.h"

namespace fm {

namespace {

// bf16 autocast for the forward pass on CUDA; fp32 master weights and optimizer state are untouched.
struct AutocastScope {
  bool on;
  explicit AutocastScope(bool enable) : on(enable) {
    if (!on) return;
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  }
  ~AutocastScope() {
    if (!on) return;
    at::autocast::set_autocast_enabled(at::kCUDA, false);
    at::autocast::clear_cache();
  }
};

}  // namespace

StepResult TrainStep::run(const Batch& batch, std::optional<double> lr) {
  StepResult r;
  r.loss = objective.loss(
      batch,
      [&](const auto& t, const auto& x, const auto& labels) {
        std::optional<ForwardRngScope> rng;
        if (forward_rng) rng.emplace(x.device(), forward_rng->seed, step, forward_rng->rank);
        AutocastScope ac(autocast);
        return model.prediction(t, channels_last ? x.contiguous(at::MemoryFormat::ChannelsLast) : x, labels);
      },
      shard);
  optimizer.zero_grad();
  if (reducer) reducer->prepare();
  r.loss.backward();
  if (reducer) reducer->finish();
  if (world && world->distributed()) {
    // The global batch's mean loss, for the guard and the metrics: equal on every rank, so all skip alike.
    std::vector<torch::Tensor> l{r.loss.detach().clone()};
    world->all_reduce_sum(l);
    r.loss = l[0] / world->size();
  }
  // The guard needs the global gradient norm every step; a NaN or inf anywhere makes it non-finite.
  r.grad_norm = clip_grad_norm(params, grad_clip);
  r.found_inf = guard.check(r.loss, r.grad_norm);  // 1: skip this step, decided on the device
  if (lr)
    optimizer.step(*lr, r.found_inf);
  else
    optimizer.step(r.found_inf);
  ema.update(r.found_inf);
  return r;
}

namespace {

std::shared_ptr<VelocityField> network_on(const Config& cfg, const std::vector<int64_t>& shape,
                                          const torch::Device& device, bool channels_last) {
  auto m = make_velocity_field(cfg.model, cfg.path, shape);
  m->to(device);
  if (channels_last) weights_to_channels_last(*m);
  return m;
}

}  // namespace

TrainingSetup::TrainingSetup(const Config& cfg, const std::vector<int64_t>& sample_shape, const torch::Device& device)
    : channels_last(prefers_channels_last(device, sample_shape, /*training=*/true)),
      autocast(device.is_cuda() && cfg.train.bf16),
      model(network_on(cfg, sample_shape, device, channels_last)),
      ema_model(network_on(cfg, sample_shape, device, channels_last)),
      ema(*model, *ema_model, cfg.train.ema_decay),
      params(model->parameters()),
      optimizer(params, {cfg.train.betas[0], cfg.train.betas[1], cfg.train.eps, cfg.train.weight_decay}),
      path(make_path(cfg.path)),
      objective(cfg, *path, model->num_classes()),
      guard(device, cfg.train.max_nonfinite_steps),
      grad_clip(cfg.train.grad_clip) {
  ema.reset();
}

TrainStep TrainingSetup::step() {
  return TrainStep{*model, objective, optimizer, ema, guard, params, grad_clip, autocast, channels_last};
}

}  // namespace fm
