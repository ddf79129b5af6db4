#include <filesystem>
#include <iostream>

#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "config/config.h"
#include "dist/world.h"
#include "train/trainer.h"

namespace fm {

void add_config_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("config", "Print the fully resolved config (defaults, file, --set) as JSON");
  auto config = std::make_shared<std::string>(), device = std::make_shared<std::string>();
  auto sets = std::make_shared<std::vector<std::string>>();
  cmd->add_option("--config", *config, "config file (JSON)")->required();
  cmd->add_option("--set", *sets, "override a key, e.g. --set train.lr=2e-4 (repeatable)")->take_all();
  cmd->add_option("--device", *device, "auto | cpu | cuda | cuda:N (overrides the config's device, as fm train's)");
  cmd->callback([=] { std::cout << to_json(load_config(*config, with_device(*sets, *device))).dump(2) << std::endl; });
}

void add_train_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("train", "Train a flow matching model");
  cmd->footer(
      "Exit status: 0 done (or stopped at --stop-after); 2 bad usage, config or input file; 75 stopped by SIGTERM,\n"
      "SIGUSR1 or SIGINT after checkpointing the current step (run again with --resume auto; a second signal ends\n"
      "at once); 1 anything else, including train.max_nonfinite_steps non-finite steps in a row.\n"
      "Several GPUs or nodes: start one process per GPU with `torchrun --no-python --nproc-per-node N fm train ...` or\n"
      "`srun fm train ...`; train.batch_size stays the global batch (each process takes 1/N of it), rank 0 writes the\n"
      "run directory, a signal on any rank stops all (each exits 75), a lost rank ends the others within\n"
      "dist.timeout_s. See the README, \"On several GPUs and nodes\".");
  struct Args {
    std::string config, out, resume, device;
    int64_t stop_after = 0;
    std::vector<std::string> sets;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--config", a->config, "config file (JSON); see `fm config` and the README")->required();
  cmd->add_option("--set", a->sets, "override a config key, e.g. --set train.lr=2e-4 (repeatable)")->take_all();
  cmd->add_option("--out", a->out, "run directory (default: runs/<config name>)");
  cmd->add_option("--resume", a->resume,
                  "auto (newest checkpoint in --out that verifies, if any) or a checkpoint path; resuming an older "
                  "checkpoint moves the newer ones to checkpoints/abandoned_<time>/");
  cmd->add_option("--device", a->device, "auto | cpu | cuda | cuda:N (overrides the config's device)");
  cmd->add_option("--stop-after", a->stop_after,
                  "checkpoint and exit at this step (for job time limits); continue later with --resume auto")
      ->check(at_least(1));
  cmd->callback([a] {
    Config cfg = load_config(a->config, with_device(a->sets, a->device));
    TrainOptions opts;
    opts.out_dir = a->out.empty() ? "runs/" + std::filesystem::path(a->config).stem().string() : a->out;
    opts.resume = a->resume;
    opts.stop_after = a->stop_after;
    auto r = train(cfg, opts);
    if (r.trained)
      spdlog::info("done: step {}, loss {:.5f}, checkpoint {}", r.step, r.last_loss, r.checkpoint);
    else
      spdlog::info("done: step {} was reached before, checkpoint {}", r.step, r.checkpoint);
    dist::shutdown_world();
  });
}

}  // namespace fm
