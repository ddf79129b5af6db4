#include <iostream>

#include <spdlog/spdlog.h>

#include "bench/bench.h"
#include "cli/commands.h"
#include "config/config.h"

namespace fm {

void add_bench_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "bench", "Time fm's training step, samplers and likelihood on one device (one JSON line per measurement)");
  cmd->footer(
      "After --warmup untimed steps, --steps training steps of the config's network on synthetic uint8 images held\n"
      "on the device: ms per step, images/s, peak memory (device memory on CUDA, peak resident set on the CPU), FLOPs\n"
      "per step counted from the U-Net's layers and, with --peak-tflops, MFU. euler (--euler-steps) and dopri5\n"
      "(atol = rtol = --tol) time sampling --sample-batch images; nll times eval-nll's likelihood (dopri5,\n"
      "Hutchinson) of --nll-batch images. scripts/bench.sh runs this beside the PyTorch reference.");
  struct Args {
    std::string config, device, weights, inputs;
    std::vector<std::string> sets;
    BenchOptions o;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--config", a->config, "config file (JSON): the network, loss and optimizer settings")->required();
  cmd->add_option("--set", a->sets, "override a config key (repeatable)")->take_all();
  cmd->add_option("--device", a->device, "auto | cpu | cuda | cuda:N");
  add_choice(cmd, "--what", a->o.what,
             "what to time, comma-separated (profile: train, then the parts of the step outside the network timed "
             "alone)",
             /*show_default=*/true)
      ->delimiter(',');
  cmd->add_option("--shape", a->o.shape, "image shape C H W (default: the config's data)")->expected(3);
  cmd->add_option("--batch", a->o.batch, "training batch (default train.batch_size)")->check(at_least(1));
  cmd->add_option("--warmup", a->o.warmup, "untimed training steps first")->check(at_least(0))->capture_default_str();
  cmd->add_option("--steps", a->o.steps, "timed training steps")->check(at_least(1))->capture_default_str();
  cmd->add_option("--sample-batch", a->o.sample_batch, "images per sampling solve")->check(at_least(1))->capture_default_str();
  cmd->add_option("--nll-batch", a->o.nll_batch, "images per likelihood solve")->check(at_least(1))->capture_default_str();
  cmd->add_option("--euler-steps", a->o.euler_steps, "steps of the euler measurement")->check(at_least(1))->capture_default_str();
  cmd->add_option("--tol", a->o.tol, "dopri5 atol = rtol")->check(greater_than(0))->capture_default_str();
  cmd->add_option("--weights", a->o.weights, "a torchcfm state_dict (.npz) to sample with (default: fresh weights)");
  cmd->add_option("--inputs", a->inputs, ".npz with x0, x1 and probe to integrate (default: drawn here)");
  cmd->add_option("--peak-tflops", a->o.peak_tflops, "the device's stated peak, for MFU")->check(greater_than(0));
  cmd->add_option("--seed", a->o.seed, "seed")->check(seed_value());
  cmd->callback([a] {
    Config cfg = load_config(a->config, with_device(a->sets, a->device));
    BenchOptions o = a->o;
    run_bench(cfg, o, [](const nlohmann::json& j) { std::cout << j.dump() << std::endl; }, a->inputs);
  });
}

}  // namespace fm
