#include <iostream>

#include "cli/commands.h"
#include "dist/world.h"
#include "eval/ema_sweep.h"
#include "eval/evaluate.h"
#include "util/error.h"

namespace fm {

void add_evaluate_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "evaluate", "The paper's Table 1 row for a checkpoint: bits/dim of the test split (dopri5, Hutchinson), FID of "
                  "dopri5 samples with their mean NFE, and FID at fixed-step budgets; JSON and a Markdown row");
  auto o = std::make_shared<EvaluateOptions>();
  cmd->add_option("--checkpoint", o->checkpoint, "checkpoint (.pt) written by fm train")->required();
  cmd->add_option("--data", o->data,
                  "data spec for the NLL (default: the data the checkpoint was trained on; folder and shapes take the "
                  "model's resolution)");
  add_choice(cmd, "--split", o->split, "for image sets that have splits (cifar10, imagenet32)");
  cmd->add_option("--fid-ref", o->fid_ref, "FID reference statistics .npz (fm fid-features or pytorch-fid)");
  cmd->add_option("--fid-weights", o->fid_weights,
                  "FID Inception weights: pytorch-fid's pt_inception-2015-12-05-6726825d.pth, or the .npz from "
                  "scripts/export_fid_inception.py");
  cmd->add_option("--fid-ref-features", o->fid_ref_features,
                  "the reference's features (.npy from fm fid-features --save-features): precision and recall (k = 3) "
                  "beside each FID");
  add_choice(cmd, "--resize", o->resize,
             "how samples reach the network's 299x299 (as the reference's statistics were made): pytorch-fid's "
             "bilinear, or clean-fid's PIL bicubic");
  cmd->add_flag("--allow-resolution-mismatch", o->allow_resolution_mismatch,
                "FID against a reference of another resolution than the samples (refused otherwise)");
  cmd->add_option("--num-samples", o->num_samples, "samples per FID (0 = no sampling)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--seeds", o->seeds,
                  "sample sets per setting, from seeds --seed, --seed + 1, ...: FID mean, standard deviation and "
                  "minimum (EDM reports the minimum of 3)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--batch", o->batch, "samples per ODE solve")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--fid-batch", o->fid_batch, "images per Inception pass")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--fixed-steps", o->fixed_steps, "also FID at these step counts of --fixed-solver (e.g. 10,20,100)")
      ->delimiter(',');
  add_choice(cmd, "--fixed-solver", o->fixed_solver, "the fixed-step solver of --fixed-steps");
  cmd->add_option("--sde-steps", o->sde_steps,
                  "also FID of SDE samples (euler_maruyama, SiT's sampler, with the checkpoint's sample.diffusion) at "
                  "this many network evaluations, e.g. 250 (0 = none)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--atol", o->atol, "dopri5 absolute tolerance (likelihood and samples)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--rtol", o->rtol, "dopri5 relative tolerance (likelihood and samples)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_flag_function("--no-nll", [o](int64_t) { o->nll = false; }, "skip bits/dim");
  cmd->add_option("--nll-limit", o->nll_limit,
                  "bits/dim of N images evenly spread over the set, index floor(i * total / N) (0 = all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--nll-batch", o->nll_batch, "images per likelihood solve")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  add_choice(cmd, "--probe", o->probe, "Hutchinson's probe");
  cmd->add_option("--dequant-samples", o->dequant_samples, "K dequantisation draws per image (importance-weighted)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--samples-dir", o->samples_dir,
                  "samples of each setting and seed go to SETTING/seed_S here (samples.npz, and fid_stats.npz with "
                  "its provenance)")
      ->capture_default_str();
  auto* resume = cmd->add_flag("--resume", o->resume,
                               "continue an earlier evaluation with the same settings: its figures and finished "
                               "samples are kept, interrupted samples continue from their shards");
  cmd->add_flag("--overwrite", o->overwrite, "replace the results and samples of an earlier evaluation")
      ->excludes(resume);
  cmd->add_option("--seed", o->seed, "seed of the sample noise (the first of --seeds), dequantisation and probes")
      ->check(seed_value())
      ->capture_default_str();
  add_choice(cmd, "--weights", o->weights, "which weights of the checkpoint");
  cmd->add_option("--device", o->device, "auto | cpu | cuda | cuda:N")->capture_default_str();
  cmd->add_option("--out", o->out, "write the results as JSON to this file (rewritten after each figure)");
  auto sweep = std::make_shared<std::vector<double>>();
  cmd->add_option("--ema-sweep", *sweep,
                  "evaluate these EMA lengths sigma_rel instead (e.g. 0.05,0.07,0.10), each reconstructed from the "
                  "run's post-hoc EMA snapshots as fm ema does; a table row per length")
      ->delimiter(',');
  cmd->callback([o, sweep] {
    // Its steps read each other's files; over ranks each would repeat the whole run and race on the outputs.
    dist::init_world(o->device, dist_timeout());
    if (dist::world().distributed())
      throw InputError("fm evaluate runs in one process; under torchrun or srun run its steps, which split over the "
                       "ranks: fm sample, fm fid-features, fm fid and fm eval-nll");
    if (!sweep->empty()) {
      std::cout << run_ema_sweep(*o, *sweep).markdown << std::flush;
      return;
    }
    auto r = run_evaluate(*o);
    std::cout << r.markdown << std::flush;
  });
}

}  // namespace fm
