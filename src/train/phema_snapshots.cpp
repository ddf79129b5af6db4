#include "train/phema_snapshots.h"

#include <spdlog/spdlog.h>

#include "checkpoint/checkpointer.h"
#include "checkpoint/phema_snapshot.h"
#include "io/file_util.h"

namespace fm {

PhemaSnapshots::PhemaSnapshots(const std::string& run_dir, dist::World& world, const TrainConfig& train,
                               const PowerEma& phema, int64_t step)
    : dir_(run_dir + "/phema"),
      world_(world),
      phema_(phema),
      every_(phema.on() ? train.ema_snapshot_every : 0),
      keep_(train.ema_snapshots_keep),
      final_step_(train.steps) {
  if (every_ == 0 || !world_.is_main()) return;
  for (const auto& moved : move_aside_phema_snapshots_after(dir_, step))
    spdlog::warn("{} at step {} abandons a newer post-hoc EMA snapshot: moved it to {}",
                 step == 0 ? "a fresh run" : "resuming", step, moved);
}

bool PhemaSnapshots::due(int64_t step) const {
  return every_ > 0 && (step % every_ == 0 || step == final_step_);
}

void PhemaSnapshots::save(int64_t step) {
  if (!world_.is_main()) return;
  if (!all_finite(phema_.parameters())) {
    spdlog::warn("no post-hoc EMA snapshot at step {}: a profile holds non-finite values", step);
    return;
  }
  make_dirs(dir_);
  save_phema_snapshot(dir_ + "/" + phema_snapshot_name(step), step, phema_);
  prune_phema_snapshots(dir_, keep_);
}

}  // namespace fm
