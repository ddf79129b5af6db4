// The options fm sample and fm reflow share: the solver (the checkpoint's sample section unless given), the seed, the
// weights, the device, resuming, classes and guidance.
#include "cli/commands.h"
#include "sample/generation.h"

namespace fm {

std::function<void()> add_generation_options(CLI::App* cmd, GenerationOptions& o) {
  auto solve = std::make_shared<SolveSettings>();  // what the options hold; only those given override the checkpoint
  auto interval = std::make_shared<std::vector<double>>();
  cmd->add_option("--batch", o.batch, "items per solve")->check(at_least(1))->capture_default_str();
  auto* solver = add_choice(cmd, "--solver", solve->solver,
                            "ODE solver, or euler_maruyama for SDE sampling (default: the checkpoint's sample.solver)",
                            /*show_default=*/false);
  auto* steps = cmd->add_option("--steps", solve->steps,
                                "steps of a fixed-step solver; euler_maruyama: network evaluations, its final step "
                                "included (default: sample.steps)")
                    ->check(at_least(1));
  auto* grid = add_choice(cmd, "--time-grid", solve->time_grid,
                          "time grid of fixed-step solvers (default: sample.time_grid)", /*show_default=*/false);
  auto* atol = cmd->add_option("--atol", solve->atol, "dopri5 absolute tolerance (default: sample.atol)")
                   ->check(greater_than(0));
  auto* rtol = cmd->add_option("--rtol", solve->rtol, "dopri5 relative tolerance (default: sample.rtol)")
                   ->check(greater_than(0));
  auto* diffusion = add_choice(cmd, "--diffusion", solve->diffusion,
                               "euler_maruyama: the diffusion coefficient w(t) of dx = (v + w score) dt + sqrt(2w) dW, "
                               "SiT's forms (default: sample.diffusion)",
                               /*show_default=*/false);
  auto* norm = cmd->add_option("--diffusion-norm", solve->diffusion_norm,
                               "euler_maruyama: the scale of w(t) (default: sample.diffusion_norm)")
                   ->check(at_least(0));
  auto* last = cmd->add_option("--sde-last-step", solve->sde_last_step,
                               "euler_maruyama: the size of the final noise-free step to t=1 (default: "
                               "sample.sde_last_step)")
                   ->check(CLI::Range(0.0, 0.999999));
  cmd->add_flag("--cuda-graph", o.solve.cuda_graph,
                "CUDA: replay the network as one captured CUDA graph per evaluation (default: sample.cuda_graph)");
  cmd->add_option("--seed", o.seed, "noise seed (item i gets the same noise whatever --batch or the ranks)")
      ->check(seed_value())
      ->capture_default_str();
  add_choice(cmd, "--weights", o.weights, "which weights of the checkpoint");
  cmd->add_option("--device", o.device, "auto | cpu | cuda | cuda:N")->capture_default_str();
  auto* resume = cmd->add_flag("--resume", o.resume,
                               "continue an interrupted run in --out with the same settings, keeping its shards");
  cmd->add_flag("--overwrite", o.overwrite, "replace the outputs or shards of an earlier run in --out")->excludes(resume);
  auto* cls = cmd->add_option("--class", o.classes, "class-conditional models: sample this class (name or index)");
  cmd->add_option("--classes", o.classes, "class-conditional models: 'all' cycles through every class")
      ->check(CLI::IsMember({"all"}))
      ->excludes(cls);
  cmd->add_option("--cfg-scale", o.cfg_scale, "classifier-free guidance w: (1 + w) v(x|c) - w v(x)")
      ->capture_default_str();
  cmd->add_option("--cfg-interval", *interval,
                  "LO,HI: guide only at times t in [LO, HI] (fm's t: noise at 0, data at 1; Kynkaanniemi et al.'s "
                  "noise levels (s_lo, s_hi] are t in [1/(1+s_hi), 1/(1+s_lo)) on cond_ot; default 0,1)")
      ->delimiter(',')
      ->expected(2);
  return [&o, solve, interval, solver, steps, grid, atol, rtol, diffusion, norm, last] {
    if (solver->count()) o.solve.solver = solve->solver;
    if (steps->count()) o.solve.steps = solve->steps;
    if (grid->count()) o.solve.time_grid = solve->time_grid;
    if (atol->count()) o.solve.atol = solve->atol;
    if (rtol->count()) o.solve.rtol = solve->rtol;
    if (diffusion->count()) o.solve.diffusion = solve->diffusion;
    if (norm->count()) o.solve.diffusion_norm = solve->diffusion_norm;
    if (last->count()) o.solve.sde_last_step = solve->sde_last_step;
    if (interval->size() == 2) o.cfg_lo = (*interval)[0], o.cfg_hi = (*interval)[1];
  };
}

}  // namespace fm
