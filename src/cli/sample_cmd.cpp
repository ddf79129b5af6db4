#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "sample/sample_run.h"

namespace fm {

void add_sample_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("sample", "Draw samples from a checkpoint (noise at t=0 integrated to data at t=1)");
  auto o = std::make_shared<SampleOptions>();
  cmd->add_option("--checkpoint", o->checkpoint, "checkpoint (.pt) written by fm train")->required();
  cmd->add_option("--n", o->n, "number of samples")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--batch", o->batch, "samples per batch")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--solver", o->solve.solver, "euler | midpoint | heun | rk4 | dopri5")
      ->check(CLI::IsMember({"euler", "midpoint", "heun", "rk4", "dopri5"}))
      ->capture_default_str();
  cmd->add_option("--steps", o->solve.steps, "steps of a fixed-step solver")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--time-grid", o->solve.time_grid, "uniform | edm (fixed-step solvers)")
      ->check(CLI::IsMember({"uniform", "edm"}))
      ->capture_default_str();
  cmd->add_option("--atol", o->solve.atol, "dopri5 absolute tolerance")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--rtol", o->solve.rtol, "dopri5 relative tolerance")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--seed", o->seed, "noise seed (sample i gets the same noise whatever --batch)")->capture_default_str();
  cmd->add_option("--weights", o->weights, "ema | raw")->check(CLI::IsMember({"ema", "raw"}))->capture_default_str();
  cmd->add_option("--device", o->device, "auto | cpu | cuda | cuda:N")->capture_default_str();
  cmd->add_option("--out", o->out_dir, "output directory (samples.npz, samples.png; shards/ while running)")
      ->capture_default_str();
  cmd->add_option("--png-dir", o->png_dir, "also write one PNG per image here (image models)");
  cmd->add_flag("--resume", o->resume, "continue an interrupted run in --out without redoing finished shards");
  auto* cls = cmd->add_option("--class", o->classes, "class-conditional models: sample this class index");
  cmd->add_option("--classes", o->classes, "class-conditional models: 'all' cycles through every class")
      ->check(CLI::IsMember({"all"}))
      ->excludes(cls);
  cmd->add_option("--cfg-scale", o->cfg_scale, "classifier-free guidance w: (1 + w) v(x|c) - w v(x)")
      ->capture_default_str();
  cmd->add_flag("--straightness", o->straightness,
                "also report the trajectories' straightness: mean over t of |x_t - ((1-t) x_0 + t x_1)|^2");
  cmd->callback([o] {
    auto s = run_sampling(*o);
    spdlog::info("wrote {} samples to {} and {} (NFE per batch: mean {:.1f}, max {:.0f})", s.n, s.npz, s.png,
                 s.mean_nfe, s.max_nfe);
    if (o->straightness) spdlog::info("straightness {:.6g} (mean over samples of the integral over t of |x_t - ((1-t) x_0 + t x_1)|^2)", s.straightness);
  });
}

}  // namespace fm
