#include "train/train_step.h"

#include <ATen/autocast_mode.h>

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
  r.loss = objective.loss(batch, [&](const auto& t, const auto& x, const auto& labels) {
    AutocastScope ac(autocast);
    return model.prediction(t, channels_last ? x.contiguous(at::MemoryFormat::ChannelsLast) : x, labels);
  });
  optimizer.zero_grad();
  r.loss.backward();
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

}  // namespace fm
