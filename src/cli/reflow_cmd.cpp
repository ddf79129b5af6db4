#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "dist/world.h"
#include "sample/reflow_run.h"

namespace fm {

void add_reflow_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "reflow", "The (noise, sample) pairs of a checkpoint's flow for training its rectified flow (Reflow): "
                "OUT/pairs.npz and OUT/pairs.json; train on them with data.path=pairs:OUT and path.coupling=pairs");
  auto o = std::make_shared<ReflowOptions>();
  o->out_dir.clear();
  cmd->footer(
      "Several GPUs or nodes: `torchrun --no-python --nproc-per-node N fm reflow ...` (or srun) splits the batches\n"
      "over the processes, each writing its shards into --out/shards; rank 0 writes the pairs, the bytes one process\n"
      "writes. A signal to any rank stops all (exit 75); --resume continues over any N.");
  cmd->add_option("--checkpoint", o->checkpoint, "checkpoint (.pt) of the flow to rectify")->required();
  cmd->add_option("--num-pairs", o->n, "number of pairs")->check(at_least(1))->required();
  cmd->add_option("--out", o->out_dir, "output directory (pairs.npz, pairs.json; shards/ while running)")->required();
  auto apply = add_generation_options(cmd, *o);
  cmd->callback([o, apply] {
    apply();
    o->device = dist::init_world(o->device, dist_timeout()).str();  // under torchrun or srun: cuda:LOCAL_RANK
    auto s = run_reflow(*o, &dist::world());
    const bool main_rank = dist::world().is_main();
    dist::shutdown_world();
    if (!main_rank) return;
    spdlog::info("wrote {} pairs to {} and {} (NFE per batch: mean {:.1f}, max {:.0f}; {:.1f} s); train on them with "
                 "--set data.path=pairs:{} --set path.coupling=pairs",
                 s.n, s.npz, s.json, s.mean_nfe, s.max_nfe, s.wall_s, o->out_dir);
  });
}

}  // namespace fm
