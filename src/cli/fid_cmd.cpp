// fm fid-features: FID Inception statistics (mu, sigma) of a set of images, as pytorch-fid's --save-stats writes them.
// fm fid: the Frechet Inception Distance between two sets, each given as statistics or as images.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "checkpoint/checkpoint.h"
#include "data/dataset.h"
#include "data/eval_data.h"
#include "dist/world.h"
#include "fid/fid_stats.h"
#include "fid/frechet.h"
#include "fid/inception.h"
#include "io/file_util.h"
#include "io/npy.h"
#include "util/device.h"
#include "util/error.h"

namespace fm {
namespace {

struct FidCommonOptions {
  std::string weights;
  std::string split = "train";
  int64_t batch = 50;
  int64_t limit = 0;
  std::string device = "auto";
};

void add_common(CLI::App* cmd, FidCommonOptions& o) {
  cmd->add_option("--split", o.split, "train | test, for image sets that have splits (cifar10, imagenet32)")
      ->check(CLI::IsMember({"train", "test"}))
      ->capture_default_str();
  cmd->add_option("--batch", o.batch, "images per network pass")->check(at_least(1))->capture_default_str();
  cmd->add_option("--limit", o.limit, "use N images evenly spread over the set, index floor(i * total / N) (0 = all)")
      ->check(at_least(0))
      ->capture_default_str();
  cmd->add_option("--device", o.device, "auto | cpu | cuda | cuda:N")->capture_default_str();
}

// Images of a data spec, held on the CPU and moved to the network a batch at a time.
Dataset load_images(const DataConfig& spec, const FidCommonOptions& o) {
  DataConfig cfg = spec;
  cfg.split = o.split;
  cfg.limit = o.limit;
  auto ds = load_dataset(cfg, torch::kCPU);
  if (ds.is_toy()) throw InputError("'" + ds.name + "': FID needs images, not a 2-D toy distribution");
  spdlog::info("{}: {} images {}x{}x{}{}", ds.name, ds.size(), ds.images.size(1), ds.images.size(2),
               ds.images.size(3), ds.subset.empty() ? "" : " (--limit takes " + ds.subset + ")");
  return ds;
}

// The record written beside a statistics file: where the numbers came from, so that two FIDs can be compared.
std::string provenance_path(const std::string& stats_path) {
  std::filesystem::path p(stats_path);
  if (p.extension() == ".npz") return p.replace_extension(".json").string();
  return stats_path + ".json";
}

// An argument of fm fid: a statistics .npz (keys mu, sigma), an image .npz (arr_0, as fm sample writes), or a spec.
struct FidSource {
  std::optional<FidStats> stats;
  std::optional<DataConfig> images;
};

FidSource classify(const std::string& arg) {
  FidSource s;
  std::error_code ec;
  if (std::filesystem::is_regular_file(arg, ec)) {
    auto keys = npz_keys(arg);
    bool has_mu = false, has_arr0 = false;
    for (const auto& k : keys) has_mu |= (k == "mu"), has_arr0 |= (k == "arr_0");
    if (!has_mu && has_arr0) {
      s.images = parse_data_spec("npz:" + arg);
    } else {
      s.stats = read_fid_stats(arg);
    }
    return s;
  }
  if (arg.find(':') == std::string::npos)
    throw InputError("'" + arg + "': no such file (expected a statistics .npz, an image .npz or a data spec "
                     "FORMAT:PATH)");
  s.images = parse_data_spec(arg);
  return s;
}

// fid-features' set: --images as given, or the data --checkpoint was trained on (see data/eval_data.h).
DataConfig images_for_features(const std::string& images, const std::string& checkpoint, const std::string& split) {
  if (checkpoint.empty()) {
    if (images.empty()) throw InputError("fid-features: --images or --checkpoint is needed");
    return parse_data_spec(images);
  }
  CheckpointReader ck(checkpoint, torch::kCPU);
  auto data = resolve_eval_data(images, ck.config().data, ck.sample_shape(), split);
  if (data.config.format == "toy") throw InputError(checkpoint + ": trained on " + data.spec + "; FID needs images");
  spdlog::info("fid-features data: {}", data.description);
  return data.config;
}

nlohmann::json count_json(int64_t n) { return n >= 0 ? nlohmann::json(n) : nlohmann::json(nullptr); }

}  // namespace

void add_fid_commands(CLI::App& app) {
  {
    auto* cmd = app.add_subcommand("fid-features", "FID Inception statistics (mu, sigma) of a set of images");
    cmd->footer(
        "Several GPUs or nodes: `torchrun --no-python --nproc-per-node N fm fid-features ...` (or srun) splits the\n"
        "batches over the processes; rank 0 writes the statistics, the bytes one process writes.");
    auto o = std::make_shared<FidCommonOptions>();
    auto images = std::make_shared<std::string>();
    auto out = std::make_shared<std::string>();
    auto save_features = std::make_shared<std::string>();
    cmd->add_option("--weights", o->weights,
                    "FID Inception weights: pytorch-fid's pt_inception-2015-12-05-6726825d.pth, or the .npz from "
                    "scripts/export_fid_inception.py")
        ->required();
    auto checkpoint = std::make_shared<std::string>();
    cmd->add_option("--images", *images,
                    "data spec: cifar10:DIR, imagenet32:DIR, folder:DIR, npz:FILE, shapes:N (default with "
                    "--checkpoint: the data it was trained on)");
    cmd->add_option("--checkpoint", *checkpoint,
                    "take the data (without --images) or the resolution of folder/shapes sets from this checkpoint");
    cmd->add_option("--out", *out,
                    "statistics .npz to write (mu, sigma as pytorch-fid; n), and beside it a .json of their provenance")
        ->required();
    cmd->add_option("--save-features", *save_features, "also write every image's 2048 features (.npy, float32)");
    add_common(cmd, *o);
    cmd->callback([o, images, checkpoint, out, save_features] {
      o->device = dist::init_world(o->device, dist_timeout()).str();  // under torchrun or srun: cuda:LOCAL_RANK
      auto device = resolve_device(o->device);
      auto spec = images_for_features(*images, *checkpoint, o->split);
      // Every output is checked (its directory created) before the features are computed.
      const std::string record_path = provenance_path(*out);
      prepare_output_file(*out, "--out");
      prepare_output_file(record_path, "--out (provenance record)");
      if (!save_features->empty()) prepare_output_file(*save_features, "--save-features");
      auto net = load_fid_inception(o->weights, device);  // a bad weights file fails before a long data load
      auto ds = load_images(spec, *o);
      FeatureOptions fo;
      fo.batch = o->batch;
      fo.keep_features = !save_features->empty();
      fo.world = &dist::world();  // under torchrun each rank takes a share of the batches; rank 0 writes
      auto r = compute_fid_features(net, ds.images, fo);
      const bool main_rank = fo.world->is_main();
      dist::shutdown_world();
      if (!main_rank) return;
      write_fid_stats(*out, r.stats);
      if (fo.keep_features) write_npy(*save_features, r.features);
      nlohmann::json record = {{"images", spec.format + ":" + spec.path},
                               {"split", has_splits(spec.format)
                                             ? nlohmann::json(o->split)
                                             : nlohmann::json(nullptr)},
                               {"n", r.stats.n},
                               {"subset", ds.subset.empty() ? "all" : ds.subset},
                               {"weights", o->weights},
                               {"weights_crc32", file_crc32(o->weights)},
                               {"device", device.str()},
                               {"fm_version", FM_VERSION},
                               {"libtorch_version", TORCH_VERSION}};
      write_file_atomic(record_path, record.dump(2) + "\n");
      spdlog::info("wrote statistics of {} images to {} and their provenance to {} ({:.1f} images/s on {})",
                   r.stats.n, *out, record_path, r.stats.n / std::max(r.seconds, 1e-9), device.str());
    });
  }
  {
    auto* cmd = app.add_subcommand("fid", "Frechet Inception Distance between two sets (statistics .npz or images)");
    auto o = std::make_shared<FidCommonOptions>();
    auto a = std::make_shared<std::string>(), b = std::make_shared<std::string>();
    auto json = std::make_shared<bool>(false);
    cmd->add_option("A", *a, "statistics .npz (mu, sigma), image .npz (arr_0) or data spec")->required();
    cmd->add_option("B", *b, "statistics .npz (mu, sigma), image .npz (arr_0) or data spec")->required();
    cmd->add_option("--weights", o->weights, "FID Inception weights, needed when A or B are images");
    cmd->add_flag("--json", *json, "print {\"fid\": ..., \"n_a\": ..., \"n_b\": ...}");
    add_common(cmd, *o);
    cmd->callback([o, a, b, json] {
      o->device = dist::init_world(o->device, dist_timeout()).str();  // under torchrun or srun: cuda:LOCAL_RANK
      FidSource sa = classify(*a), sb = classify(*b);
      std::optional<FidInception> net;
      torch::Device device = torch::kCPU;
      auto stats_of = [&](FidSource& s, const std::string& arg) {
        if (s.stats) return *s.stats;
        if (o->weights.empty()) throw InputError("fid: '" + arg + "' is a set of images: --weights is needed");
        if (!net) {
          device = resolve_device(o->device);
          net = load_fid_inception(o->weights, device);
        }
        FeatureOptions fo;
        fo.batch = o->batch;
        fo.world = &dist::world();  // every rank gets the same statistics; rank 0 prints
        return compute_fid_features(*net, load_images(*s.images, *o).images, fo).stats;
      };
      FidStats first = stats_of(sa, *a);
      FidStats second = stats_of(sb, *b);
      auto r = frechet_distance(first, second);
      const bool main_rank = dist::world().is_main();
      dist::shutdown_world();
      if (!main_rank) return;
      if (*json) {
        nlohmann::json j = {{"fid", r.distance}, {"n_a", count_json(first.n)}, {"n_b", count_json(second.n)}};
        std::cout << j.dump() << std::endl;
      } else {
        std::printf("%.6f\n", r.distance);
      }
    });
  }
}

}  // namespace fm
