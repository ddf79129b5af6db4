#pragma once
#include "config/config.h"

namespace fm {

// Learning rate for optimizer step `step` (0-based): linear warmup from lr/warmup to lr over `warmup_steps`, then
// constant, linear, cosine or polynomial decay to lr * final_lr_scale at the last step.
double lr_at(const TrainConfig& cfg, int64_t step);

}  // namespace fm
