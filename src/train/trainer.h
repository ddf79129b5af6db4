#pragma once
// The training loop shared by 2-D toys and images: conditional flow matching with AdamW, warmup and decay, gradient
// clipping, EMA, bf16 autocast on CUDA, periodic atomic checkpoints and exact resume.
#include <string>

#include "config/config.h"

namespace fm {

struct TrainOptions {
  std::string out_dir;  // the run directory: config.json, metrics.jsonl, checkpoints/, figures
  std::string resume;   // "" (fresh), "auto" (newest checkpoint in out_dir, if any) or a checkpoint path
  int64_t stop_after = 0;  // > 0: checkpoint and return at this step, as a job with a time limit would
};

struct TrainResult {
  int64_t step = 0;
  double last_loss = 0.0;  // mean loss over the last logging interval
  std::string checkpoint;  // the last checkpoint written (or resumed from)
  bool trained = true;     // false: the checkpoint resumed from was already at the run's last step
};

TrainResult train(const Config& cfg, const TrainOptions& opts);

}  // namespace fm
