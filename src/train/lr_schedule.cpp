#include "train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace fm {

namespace {

// The decay's factor at `progress` in [0, 1]: from 1 at the end of the warmup to 0 at the last step.
double decay_scale(const TrainConfig& cfg, double progress) {
  switch (cfg.decay) {
    case LrDecay::constant:
      return 1.0;
    case LrDecay::linear:
      return 1.0 - progress;
    case LrDecay::cosine:
      return 0.5 * (1.0 + std::cos(M_PI * progress));
    case LrDecay::poly:
      return std::pow(1.0 - progress, cfg.decay_power);
  }
  throw std::logic_error("lr_at: unhandled train.decay");
}

}  // namespace

double lr_at(const TrainConfig& cfg, int64_t step) {
  if (step < cfg.warmup_steps) return cfg.lr * static_cast<double>(step + 1) / static_cast<double>(cfg.warmup_steps);
  if (cfg.decay == LrDecay::constant) return cfg.lr;
  const int64_t span = std::max<int64_t>(1, cfg.steps - 1 - cfg.warmup_steps);
  const double progress = std::clamp(static_cast<double>(step - cfg.warmup_steps) / span, 0.0, 1.0);
  return cfg.lr * (cfg.final_lr_scale + (1.0 - cfg.final_lr_scale) * decay_scale(cfg, progress));
}

}  // namespace fm
