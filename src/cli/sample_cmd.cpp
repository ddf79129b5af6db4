#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "dist/world.h"
#include "sample/sample_run.h"

namespace fm {

void add_sample_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("sample", "Draw samples from a checkpoint (noise at t=0 integrated to data at t=1)");
  auto o = std::make_shared<SampleOptions>();
  auto solve = std::make_shared<SolveSettings>();  // what the options hold; only those given override the checkpoint
  cmd->footer(
      "Several GPUs or nodes: `torchrun --no-python --nproc-per-node N fm sample ...` (or srun) splits the batches over\n"
      "the processes; each writes its shards into --out/shards (a directory every node sees), rank 0 writes the\n"
      "samples, the bytes one process writes. A signal to any rank stops all (exit 75); --resume works over any N.");
  cmd->add_option("--checkpoint", o->checkpoint, "checkpoint (.pt) written by fm train")->required();
  cmd->add_option("-n,--num-samples", o->n, "number of samples")->check(at_least(1))->capture_default_str();
  cmd->add_option("--batch", o->batch, "samples per batch")->check(at_least(1))->capture_default_str();
  auto* solver = add_choice(cmd, "--solver", solve->solver, "ODE solver (default: the checkpoint's sample.solver)",
                            /*show_default=*/false);
  auto* steps = cmd->add_option("--steps", solve->steps, "steps of a fixed-step solver (default: sample.steps)")
                    ->check(at_least(1));
  auto* grid = add_choice(cmd, "--time-grid", solve->time_grid,
                          "time grid of fixed-step solvers (default: sample.time_grid)", /*show_default=*/false);
  auto* atol = cmd->add_option("--atol", solve->atol, "dopri5 absolute tolerance (default: sample.atol)")
                   ->check(greater_than(0));
  auto* rtol = cmd->add_option("--rtol", solve->rtol, "dopri5 relative tolerance (default: sample.rtol)")
                   ->check(greater_than(0));
  cmd->add_flag("--cuda-graph", o->solve.cuda_graph,
                "CUDA: replay the network as one captured CUDA graph per evaluation (default: sample.cuda_graph)");
  cmd->add_option("--seed", o->seed, "noise seed (sample i gets the same noise whatever --batch)")
      ->check(seed_value())
      ->capture_default_str();
  add_choice(cmd, "--weights", o->weights, "which weights of the checkpoint");
  cmd->add_option("--device", o->device, "auto | cpu | cuda | cuda:N")->capture_default_str();
  cmd->add_option("--out", o->out_dir,
                  "output directory (samples.npz, samples.png, samples.json; shards/ while running)")
      ->capture_default_str();
  cmd->add_option("--png-dir", o->png_dir, "also write one PNG per image here (image models)");
  cmd->add_option("--grid-n", o->grid_n, "images in samples.png (image models)")
      ->check(at_least(1))
      ->capture_default_str();
  auto* resume = cmd->add_flag("--resume", o->resume,
                               "continue an interrupted run in --out with the same settings, keeping its shards");
  cmd->add_flag("--overwrite", o->overwrite, "replace the samples or shards of an earlier run in --out")
      ->excludes(resume);
  auto* cls = cmd->add_option("--class", o->classes, "class-conditional models: sample this class (name or index)");
  cmd->add_option("--classes", o->classes, "class-conditional models: 'all' cycles through every class")
      ->check(CLI::IsMember({"all"}))
      ->excludes(cls);
  cmd->add_option("--cfg-scale", o->cfg_scale, "classifier-free guidance w: (1 + w) v(x|c) - w v(x)")
      ->capture_default_str();
  cmd->add_flag("--straightness", o->straightness,
                "also report the trajectories' straightness: mean over t of |x_t - ((1-t) x_0 + t x_1)|^2");
  cmd->callback([o, solve, solver, steps, grid, atol, rtol] {
    if (solver->count()) o->solve.solver = solve->solver;
    if (steps->count()) o->solve.steps = solve->steps;
    if (grid->count()) o->solve.time_grid = solve->time_grid;
    if (atol->count()) o->solve.atol = solve->atol;
    if (rtol->count()) o->solve.rtol = solve->rtol;
    o->device = dist::init_world(o->device, dist_timeout()).str();  // under torchrun or srun: cuda:LOCAL_RANK
    auto s = run_sampling(*o, &dist::world());
    const bool main_rank = dist::world().is_main();
    dist::shutdown_world();
    if (!main_rank) return;
    spdlog::info("wrote {} samples to {}, {} and {} (NFE per batch: mean {:.1f}, max {:.0f}; {:.1f} s)", s.n, s.npz,
                 s.png, s.json, s.mean_nfe, s.max_nfe, s.wall_s);
    if (o->straightness)
      spdlog::info("straightness {:.6g} (mean over samples of the integral over t of |x_t - ((1-t) x_0 + t x_1)|^2)",
                   s.straightness);
  });
}

}  // namespace fm
