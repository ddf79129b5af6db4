// fm fid-features: FID Inception statistics (mu, sigma) of a set of images, as pytorch-fid's --save-stats writes them.
// fm fid: the Frechet Inception Distance between two sets, each given as statistics, features or images, with precision
// and recall where both have features.
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "dist/world.h"
#include "fid/fid_run.h"

namespace fm {
namespace {

void add_image_options(CLI::App* cmd, FidImageOptions& o) {
  add_choice(cmd, "--split", o.split, "for image sets that have splits (cifar10, imagenet32)");
  cmd->add_option("--batch", o.batch, "images per network pass")->check(at_least(1))->capture_default_str();
  cmd->add_option("--limit", o.limit, "use N images evenly spread over the set, index floor(i * total / N) (0 = all)")
      ->check(at_least(0))
      ->capture_default_str();
  add_choice(cmd, "--resize", o.resize,
             "how images reach the network's 299x299: pytorch-fid's bilinear resize, or clean-fid's PIL bicubic");
  cmd->add_option("--device", o.device, "auto | cpu | cuda | cuda:N")->capture_default_str();
}

const char* kWeightsHelp =
    "FID Inception weights: pytorch-fid's pt_inception-2015-12-05-6726825d.pth, or the .npz from "
    "scripts/export_fid_inception.py";

nlohmann::json count_json(int64_t n) { return n >= 0 ? nlohmann::json(n) : nlohmann::json(nullptr); }

nlohmann::json fid_json(const FidResult& r) {
  nlohmann::json j = {{"fid", r.fid}, {"n_a", count_json(r.n_a)}, {"n_b", count_json(r.n_b)},
                      {"a", r.about_a}, {"b", r.about_b}, {"k", kPrecisionRecallK}};
  j["precision"] = r.precision_recall ? nlohmann::json(r.precision_recall->precision) : nlohmann::json(nullptr);
  j["recall"] = r.precision_recall ? nlohmann::json(r.precision_recall->recall) : nlohmann::json(nullptr);
  if (!r.precision_recall) j["precision_recall_skipped"] = r.precision_recall_skipped;
  return j;
}

}  // namespace

void add_fid_commands(CLI::App& app) {
  {
    auto* cmd = app.add_subcommand("fid-features", "FID Inception statistics (mu, sigma) of a set of images");
    cmd->footer(
        "Several GPUs or nodes: `torchrun --no-python --nproc-per-node N fm fid-features ...` (or srun) splits the\n"
        "batches over the processes; rank 0 writes the statistics, the bytes one process writes. SIGTERM, SIGUSR1 or\n"
        "SIGINT stops it after the batches in flight with exit 75, keeping the finished ones: run again with --resume.");
    auto o = std::make_shared<FidFeaturesOptions>();
    cmd->add_option("--weights", o->weights, kWeightsHelp)->required();
    cmd->add_option("--images", o->images,
                    "data spec: cifar10:DIR, imagenet32:DIR, folder:DIR, npz:FILE, shapes:N (default with "
                    "--checkpoint: the data it was trained on)");
    cmd->add_option("--checkpoint", o->checkpoint,
                    "take the data (without --images) or the resolution of folder/shapes sets from this checkpoint");
    cmd->add_option("--out", o->out,
                    "statistics .npz to write (mu, sigma as pytorch-fid; n), and beside it a .json of their provenance")
        ->required();
    cmd->add_option("--save-features", o->save_features,
                    "also write every image's 2048 features (.npy, float32; its provenance .json beside it), which fm "
                    "fid takes for precision and recall");
    auto* resume = cmd->add_flag("--resume", o->resume,
                                 "continue a stopped run with the same settings from the features it finished "
                                 "(kept in OUT.shards/ while it runs)");
    cmd->add_flag("--overwrite", o->overwrite, "discard the finished features of a stopped run")->excludes(resume);
    add_image_options(cmd, o->images_options);
    cmd->callback([o] {
      // Under torchrun or srun: cuda:LOCAL_RANK.
      o->images_options.device = dist::init_world(o->images_options.device, dist_timeout()).str();
      auto r = run_fid_features(*o, dist::world());
      const bool main_rank = dist::world().is_main();
      dist::shutdown_world();
      if (!main_rank) return;
      spdlog::info("wrote statistics of {} images to {} and their provenance to {} ({:.1f} images/s on {})",
                   r.stats.n, o->out, r.record, r.stats.n / std::max(r.seconds, 1e-9), r.device);
    });
  }
  {
    auto* cmd = app.add_subcommand("fid", "Frechet Inception Distance between two sets (statistics .npz, features .npy or "
                                          "images), and precision and recall where both have features");
    auto o = std::make_shared<FidOptions>();
    auto json = std::make_shared<bool>(false);
    const char* side = "statistics .npz (mu, sigma), features .npy (fid-features --save-features), image .npz "
                       "(arr_0) or data spec";
    cmd->add_option("A", o->a, std::string("the generated set: ") + side)->required();
    cmd->add_option("B", o->b, std::string("the reference set: ") + side)->required();
    cmd->add_option("--weights", o->weights, std::string(kWeightsHelp) + "; needed when A or B are images");
    cmd->add_flag("--json", *json,
                  "print {\"fid\", \"n_a\", \"n_b\", \"a\", \"b\" (what each side is of: images, split, n, "
                  "resize, resolution), \"precision\", \"recall\", \"k\"}");
    cmd->add_flag("--allow-resolution-mismatch", o->allow_resolution_mismatch,
                  "compare sets whose images have different resolutions (refused otherwise)");
    add_image_options(cmd, o->images_options);
    cmd->callback([o, json] {
      o->images_options.device = dist::init_world(o->images_options.device, dist_timeout()).str();
      auto r = run_fid(*o, dist::world());  // every rank gets the same statistics; rank 0 prints
      const bool main_rank = dist::world().is_main();
      dist::shutdown_world();
      if (!main_rank) return;
      spdlog::info("A: {}", about_line(r.about_a));
      spdlog::info("B: {}", about_line(r.about_b));
      if (r.precision_recall)
        spdlog::info("precision {:.4f}, recall {:.4f} (k = {}; A generated, B reference)",
                     r.precision_recall->precision, r.precision_recall->recall, r.precision_recall->k);
      else
        spdlog::info("no precision and recall: {}", r.precision_recall_skipped);
      if (*json) {
        std::cout << fid_json(r).dump() << std::endl;
      } else {
        std::printf("%.6f\n", r.fid);
      }
    });
  }
}

}  // namespace fm
