#include "train/train_step.h"

#include <ATen/autocast_mode.h>

#include "dist/grad_reducer.h"
#include "dist/world.h"
#include "kernels/kernels.h"
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

std::shared_ptr<VelocityField> network_on(const Config& cfg, const std::vector<int64_t>& shape,
                                          const torch::Device& device, bool channels_last) {
  auto m = make_velocity_field(cfg.model, cfg.path, shape);
  m->to(device);
  if (channels_last) kernels::weights_to_channels_last(*m);
  return m;
}

}  // namespace

TrainingSetup::TrainingSetup(const Config& cfg, const std::vector<int64_t>& sample_shape, const torch::Device& device)
    : channels_last(kernels::prefers_channels_last(device, sample_shape, /*training=*/true)),
      autocast(device.is_cuda() && cfg.train.bf16),
      model(network_on(cfg, sample_shape, device, channels_last)),
      ema_model(network_on(cfg, sample_shape, device, channels_last)),
      ema(*model, *ema_model, cfg.train.ema_decay),
      phema(tracked_sigma_rels(cfg.train), *model,
            [&] { return network_on(cfg, sample_shape, device, channels_last); }),
      params(model->parameters()),
      optimizer(params, {cfg.train.betas[0], cfg.train.betas[1], cfg.train.eps, cfg.train.weight_decay}),
      path(make_path(cfg.path)),
      objective(make_objective(cfg, *path, conditioning_of(cfg.model))),
      guard(device, cfg.train.max_nonfinite_steps),
      grad_clip(cfg.train.grad_clip) {
  ema.reset();
}

TrainStep::TrainStep(TrainingSetup& parts, StepParallel parallel)
    : parts_(parts),
      parallel_(parallel),
      shard_{parallel.world ? parallel.world->rank() : 0, parallel.world ? parallel.world->size() : 1} {}

StepResult TrainStep::operator()(const Batch& batch, int64_t step, std::optional<double> lr) {
  auto& p = parts_;
  StepResult r;
  NetworkCalls net;
  net.predict = [&](const auto& t, const auto& x, const auto& labels) {
    std::optional<ForwardRngScope> rng;
    if (parallel_.forward_rng_seed)
      rng.emplace(x.device(), *parallel_.forward_rng_seed, step, static_cast<int>(shard_.index));
    AutocastScope ac(p.autocast);
    return p.model->prediction(t, p.channels_last ? x.contiguous(at::MemoryFormat::ChannelsLast) : x, labels);
  };
  if (p.model->has_second_time()) {
    // Every call of a step draws the same dropout masks (the stream of (seed, step, rank)). No bf16 autocast: the
    // Jacobian-vector product of the MeanFlow target runs in float32, as the paper's PyTorch code runs it.
    net.mean = [&](const auto& t, const auto& r, const auto& x, const auto& labels) {
      std::optional<ForwardRngScope> rng;
      if (parallel_.forward_rng_seed)
        rng.emplace(x.device(), *parallel_.forward_rng_seed, step, static_cast<int>(shard_.index));
      return p.model->forward_mean(t, r, p.channels_last ? x.contiguous(at::MemoryFormat::ChannelsLast) : x, labels);
    };
  }
  r.loss = p.objective->loss_from(batch, net, shard_);
  p.optimizer.zero_grad();
  if (parallel_.reducer) parallel_.reducer->prepare();
  r.loss.backward();
  if (parallel_.reducer) parallel_.reducer->finish();
  auto* world = parallel_.world;
  if (world && world->distributed()) {
    // The global batch's mean loss, for the guard and the metrics: equal on every rank, so all skip alike.
    std::vector<torch::Tensor> l{r.loss.detach().clone()};
    world->all_reduce_sum(l);
    r.loss = l[0] / world->size();
  }
  // The guard needs the global gradient norm every step; a NaN or inf anywhere makes it non-finite.
  r.grad_norm = clip_grad_norm(p.params, p.grad_clip);
  r.found_inf = p.guard.check(r.loss, r.grad_norm);  // 1: skip this step, decided on the device
  if (lr)
    p.optimizer.step(*lr, r.found_inf);
  else
    p.optimizer.step(r.found_inf);
  p.ema.update(r.found_inf);
  p.phema.update(r.found_inf);
  return r;
}

}  // namespace fm
