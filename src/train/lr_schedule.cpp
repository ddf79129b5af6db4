#include "train/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace fm {

double lr_at(const TrainConfig& cfg, int64_t step) {
  if (step < cfg.warmup_steps) return cfg.lr * static_cast<double>(step + 1) / static_cast<double>(cfg.warmup_steps);
  if (cfg.decay == "constant") return cfg.lr;
  const int64_t span = std::max<int64_t>(1, cfg.steps - 1 - cfg.warmup_steps);
  const double progress = std::clamp(static_cast<double>(step - cfg.warmup_steps) / span, 0.0, 1.0);
  double scale;  // goes from 1 to 0 over the decay
  if (cfg.decay == "linear")
    scale = 1.0 - progress;
  else if (cfg.decay == "cosine")
    scale = 0.5 * (1.0 + std::cos(M_PI * progress));
  else  // poly
    scale = std::pow(1.0 - progress, cfg.decay_power);
  return cfg.lr * (cfg.final_lr_scale + (1.0 - cfg.final_lr_scale) * scale);
}

}  // namespace fm
