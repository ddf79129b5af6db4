#include <iostream>

#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "dist/world.h"
#include "eval/eval_nll.h"

namespace fm {

void add_eval_nll_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "eval-nll", "Exact likelihood of held-out data (data at t=1 integrated back to noise at t=0): bits/dim for "
                  "8-bit images, NLL in nats for 2-D toys");
  auto o = std::make_shared<EvalNllOptions>();
  cmd->footer(
      "Several GPUs or nodes: `torchrun --no-python --nproc-per-node N fm eval-nll ...` (or srun) splits the batches\n"
      "over the processes; rank 0 prints and writes the result one process computes.");
  cmd->add_option("--checkpoint", o->checkpoint, "checkpoint (.pt) written by fm train")->required();
  cmd->add_option("--data", o->data,
                  "data spec: cifar10:DIR, imagenet32:DIR, npz:FILE, folder:DIR, shapes:N, toy:NAME (default: the "
                  "data the checkpoint was trained on; folder and shapes take the model's resolution)");
  add_choice(cmd, "--split", o->split, "for image sets that have splits (cifar10, imagenet32)");
  cmd->add_option("--limit", o->limit,
                  "images: N evenly spread over the set, index floor(i * total / N) (0 = all); toys: points drawn "
                  "(0 = 1000)")
      ->check(at_least(0))
      ->capture_default_str();
  cmd->add_option("--batch", o->batch, "items per ODE solve")->check(at_least(1))->capture_default_str();
  add_choice(cmd, "--divergence", o->divergence,
             "the divergence of the velocity: Hutchinson's estimate with one probe per item, or exact (D backward "
             "passes)");
  add_choice(cmd, "--probe", o->probe, "Hutchinson's probe");
  cmd->add_option("--dequant-samples", o->dequant_samples,
                  "K > 1: importance-weighted bound over K uniform dequantisation draws (images), one "
                  "Hutchinson probe shared by the K draws")
      ->check(at_least(1))
      ->capture_default_str();
  cmd->add_option("--atol", o->atol, "dopri5 absolute tolerance")->check(greater_than(0))->capture_default_str();
  cmd->add_option("--rtol", o->rtol, "dopri5 relative tolerance")->check(greater_than(0))->capture_default_str();
  cmd->add_option("--seed", o->seed, "seed of dequantisation noise, probes and toy points")
      ->check(seed_value())
      ->capture_default_str();
  add_choice(cmd, "--weights", o->weights, "which weights of the checkpoint");
  cmd->add_option("--device", o->device, "auto | cpu | cuda | cuda:N")->capture_default_str();
  cmd->add_option("--out", o->out, "write the results and their provenance as JSON to this file");
  cmd->add_option("--per-image", o->per_image,
                  "write one value per item (bits/dim or nats): FILE.npy as float64 [N], any other name as text");
  cmd->callback([o] {
    o->device = dist::init_world(o->device, dist_timeout()).str();  // under torchrun or srun: cuda:LOCAL_RANK
    auto s = run_eval_nll(*o, &dist::world());
    const bool main_rank = dist::world().is_main();
    dist::shutdown_world();
    if (!main_rank) return;
    const bool bpd = s.metric == "bits_per_dim";
    spdlog::info("{} = {:.4f} +- {:.4f} (standard error) over {} {}, mean NFE {:.1f}, {:.1f} s",
                 bpd ? "bits/dim" : "NLL (nats)", s.mean, s.stderr_mean, s.n, bpd ? "images" : "points", s.mean_nfe,
                 s.wall_s);
    std::cout << s.json.dump() << std::endl;
  });
}

}  // namespace fm
