#include "dist/agree_to_stop.h"

#include "util/preemption.h"

namespace fm::dist {

int agree_to_stop(World& world) {
  if (!world.any(stop_requested())) return 0;
  if (!world.distributed()) return stop_signal();
  // A rank stopped by another rank's signal has none of its own (0): the largest is one that came.
  auto mine = torch::tensor({static_cast<int64_t>(stop_signal())}, torch::kLong).to(world.device());
  return static_cast<int>(world.all_gather_cat(mine).max().item<int64_t>());
}

void leave_on_stop(World& world, int signal, bool state_saved) {
  world.barrier();
  if (world.distributed()) ignore_stop_signals();
  throw StopRequested{signal, state_saved};
}

}  // namespace fm::dist
