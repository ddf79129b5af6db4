#pragma once
// When and where a run snapshots its post-hoc EMA profiles (train/phema.h): every train.ema_snapshot_every steps and at
// the run's final step (train.steps), written by rank 0 alone into RUN/phema/phema_<step>.pt (sealed, atomic;
// checkpoint/phema_snapshot.h), the newest train.ema_snapshots_keep kept (0: all). Snapshots of a branch a resume
// abandons are moved aside, as the checkpointer does with checkpoints, so that `fm ema` never mixes two histories.
#include <string>

#include "config/config.h"
#include "dist/world.h"
#include "train/phema.h"

namespace fm {

class PhemaSnapshots {
 public:
  // A run starting at `step` (0: fresh): rank 0 moves any snapshot after `step` aside (RUN/phema/abandoned_<time>/).
  PhemaSnapshots(const std::string& run_dir, dist::World& world, const TrainConfig& train, const PowerEma& phema,
                 int64_t step);
  bool due(int64_t step) const;
  // Rank 0 writes the snapshot of `step` (unless a profile holds a non-finite value: then a warning, nothing written)
  // and prunes; the other ranks do nothing.
  void save(int64_t step);
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  dist::World& world_;
  const PowerEma& phema_;
  int64_t every_, keep_, final_step_;
};

}  // namespace fm
