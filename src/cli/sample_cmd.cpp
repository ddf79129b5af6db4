#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "dist/world.h"
#include "sample/sample_run.h"

namespace fm {

void add_sample_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("sample", "Draw samples from a checkpoint (noise at t=0 integrated to data at t=1)");
  auto o = std::make_shared<SampleOptions>();
  cmd->footer(
      "Several GPUs or nodes: `torchrun --no-python --nproc-per-node N fm sample ...` (or srun) splits the batches over\n"
      "the processes; each writes its shards into --out/shards (a directory every node sees), rank 0 writes the\n"
      "samples, the bytes one process writes. A signal to any rank stops all (exit 75); --resume works over any N.");
  cmd->add_option("--checkpoint", o->checkpoint, "checkpoint (.pt) written by fm train")->required();
  cmd->add_option("-n,--num-samples", o->n, "number of samples")->check(at_least(1))->capture_default_str();
  auto apply = add_generation_options(cmd, *o);
  cmd->add_option("--out", o->out_dir,
                  "output directory (samples.npz, samples.png, samples.json; shards/ while running)")
      ->capture_default_str();
  cmd->add_option("--png-dir", o->png_dir, "also write one PNG per image here (image models)");
  cmd->add_option("--grid-n", o->grid_n, "images in samples.png (image models)")
      ->check(at_least(1))
      ->capture_default_str();
  cmd->add_flag("--straightness", o->straightness,
                "also report the trajectories' straightness: mean over t of |x_t - ((1-t) x_0 + t x_1)|^2");
  cmd->add_option("--toy-reference", o->toy_reference,
                  "2-D models: measure the samples against toy:NAME (sliced Wasserstein distance; the fraction on "
                  "the board for the checkerboard) in samples.json (default: the checkpoint's data when it is a toy)");
  cmd->callback([o, apply] {
    apply();
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
    if (s.toy_metrics.is_object())
      spdlog::info("against {}: sliced Wasserstein distance {:.4f}{}", s.toy_metrics["reference"].get<std::string>(),
                   s.toy_metrics["sliced_wasserstein"].get<double>(),
                   s.toy_metrics.contains("on_checkerboard")
                       ? fmt::format(", on the board {:.4f}", s.toy_metrics["on_checkerboard"].get<double>())
                       : std::string());
  });
}

}  // namespace fm
