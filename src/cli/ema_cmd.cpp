#include <cstdio>
#include <iostream>

#include "checkpoint/phema_reconstruct.h"
#include "cli/commands.h"

namespace fm {

void add_ema_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "ema", "Post-hoc EMA (EDM2): checkpoints with the EMA of any length sigma_rel, reconstructed from a run's "
             "snapshots of its power-function profiles (train.ema_snapshot_every)");
  auto o = std::make_shared<PhemaReconstruction>();
  auto run = std::make_shared<std::string>();
  auto step = std::make_shared<int64_t>(-1);
  cmd->add_option("--run-dir", *run, "the run directory: checkpoints/ and phema/ (its snapshots)")->required();
  cmd->add_option("--sigma-rel", o->sigma_rels,
                  "the EMA lengths to reconstruct, relative standard deviations in (0, 0.2887], e.g. 0.05,0.07,0.10")
      ->delimiter(',')
      ->required();
  cmd->add_option("--out", o->out_dir, "where the checkpoints ema_<sigma_rel>_<step>.pt and their records go")
      ->required();
  cmd->add_option("--step", *step,
                  "reconstruct at this step, which needs a checkpoint and a snapshot (default: the newest such step)")
      ->check(at_least(1));
  cmd->add_option("--from-sigma-rel", o->input_sigma_rels,
                  "combine only the snapshotted profiles of these lengths (default: every profile)")
      ->delimiter(',');
  cmd->add_flag("--overwrite", o->overwrite, "replace reconstructions already in --out");
  cmd->callback([o, run, step] {
    o->checkpoint = phema_checkpoint_of_run(*run, *step);
    o->snapshot_dir = *run + "/phema";
    const auto outs = reconstruct_phema(*o);
    std::printf("| sigma_rel | gamma | step | profiles combined | checkpoint |\n|---:|---:|---:|---:|---|\n");
    for (const auto& r : outs)
      std::printf("| %g | %.3f | %lld | %lld | %s |\n", r.sigma_rel, r.gamma, static_cast<long long>(r.step),
                  static_cast<long long>(r.inputs), r.checkpoint.c_str());
    std::fflush(stdout);
  });
}

}  // namespace fm
