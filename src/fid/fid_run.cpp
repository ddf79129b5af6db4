#include "fid/fid_run.h"

#include <filesystem>
#include <optional>

#include <spdlog/spdlog.h>

#include "checkpoint/checkpoint.h"
#include "data/dataset.h"
#include "data/eval_data.h"
#include "fid/frechet.h"
#include "io/file_util.h"
#include "io/npy.h"
#include "io/provenance.h"
#include "util/device.h"
#include "util/error.h"
#include "util/preemption.h"

namespace fm {
namespace {

// Images of a data spec, held on the CPU and moved to the network a batch at a time.
Dataset load_images(const DataConfig& spec, const FidImageOptions& o) {
  DataConfig cfg = spec;
  cfg.split = o.split;
  cfg.limit = o.limit;
  auto ds = load_dataset(cfg, torch::kCPU);
  if (ds.is_toy() || ds.is_pairs())
    throw InputError("'" + ds.name + "': FID needs images, not " +
                     (ds.is_toy() ? "a 2-D toy distribution" : "fm reflow's pairs (their x1 are float samples)"));
  spdlog::info("{}: {} images {}x{}x{}{}", ds.name, ds.size(), ds.images.size(1), ds.images.size(2),
               ds.images.size(3), ds.subset.empty() ? "" : " (--limit takes " + ds.subset + ")");
  return ds;
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
    if (!has_mu && has_arr0)
      s.images = parse_data_spec("npz:" + arg);
    else
      s.stats = read_fid_stats(arg);
    return s;
  }
  if (arg.find(':') == std::string::npos)
    throw InputError("'" + arg + "': no such file (expected a statistics .npz, an image .npz or a data spec "
                     "FORMAT:PATH)");
  s.images = parse_data_spec(arg);
  return s;
}

// fid-features' set: --images as given, or the data --checkpoint was trained on (see data/eval_data.h).
DataConfig images_for_features(const std::string& images, const std::string& checkpoint, Split split) {
  if (checkpoint.empty()) {
    if (images.empty()) throw InputError("fid-features: --images or --checkpoint is needed");
    return parse_data_spec(images);
  }
  CheckpointReader ck(checkpoint, torch::kCPU);
  auto data = resolve_eval_data(images, ck.config().data, ck.sample_shape(), split);
  if (data.config.format == DataFormat::toy)
    throw InputError(checkpoint + ": trained on " + data.spec + "; FID needs images");
  spdlog::info("fid-features data: {}", data.description);
  return data.config;
}

// The option a stored setting of fid-features comes from, for the message that refuses a resume.
std::string features_option_of(const std::string& key) {
  if (key.rfind("weights", 0) == 0) return "--weights";
  if (key == "n") return "--images";
  return "--" + key;
}

}  // namespace

std::string provenance_path(const std::string& stats_path) {
  std::filesystem::path p(stats_path);
  if (p.extension() == ".npz") return p.replace_extension(".json").string();
  return stats_path + ".json";
}

FidStats image_stats(FidInception& net, const DataConfig& spec, const FidImageOptions& o, dist::World& world) {
  FeatureOptions fo;
  fo.batch = o.batch;
  fo.world = &world;
  return compute_fid_features(net, load_images(spec, o).images, fo).stats;
}

FidFeaturesResult run_fid_features(const FidFeaturesOptions& o, dist::World& world) {
  install_stop_handlers();
  const auto device = resolve_device(o.images_options.device);
  auto spec = images_for_features(o.images, o.checkpoint, o.images_options.split);
  FidFeaturesResult r;
  r.record = provenance_path(o.out);
  r.device = device.str();
  prepare_output_file(o.out, "--out");
  prepare_output_file(r.record, "--out (provenance record)");
  if (!o.save_features.empty()) prepare_output_file(o.save_features, "--save-features");
  dist::ShardDir shards(o.out + ".shards");
  shards.check_usable(o.resume, o.overwrite);
  auto net = load_fid_inception(o.weights, device);  // a bad weights file fails before a long data load
  auto ds = load_images(spec, o.images_options);
  // What decides the features: a resume must have the same.
  nlohmann::json settings = {{"images", data_spec(spec)},
                             {"split", name_of(o.images_options.split)},
                             {"limit", o.images_options.limit},
                             {"batch", o.images_options.batch},
                             {"n", ds.size()}};
  record_file(settings, "weights", o.weights);
  shards.prepare(o.resume, settings, {"weights"}, features_option_of, world);
  FeatureOptions fo;
  fo.batch = o.images_options.batch;
  fo.keep_features = !o.save_features.empty();
  fo.world = &world;
  fo.shards = &shards;
  auto f = compute_fid_features(net, ds.images, fo);
  r.stats = f.stats;
  r.seconds = f.seconds;
  if (!world.is_main()) return r;
  write_fid_stats(o.out, r.stats);
  if (fo.keep_features) write_npy(o.save_features, f.features);
  nlohmann::json record = {{"images", data_spec(spec)},
                           {"split", has_splits(spec.format) ? nlohmann::json(name_of(o.images_options.split))
                                                             : nlohmann::json(nullptr)},
                           {"n", r.stats.n},
                           {"subset", ds.subset.empty() ? "all" : ds.subset}};
  record_file(record, "weights", o.weights);
  record_software(record, device);
  write_file_atomic(r.record, record.dump(2) + "\n");
  shards.remove();
  return r;
}

FidResult run_fid(const FidOptions& o, dist::World& world) {
  install_stop_handlers();
  FidSource sa = classify(o.a), sb = classify(o.b);
  std::optional<FidInception> net;
  auto stats_of = [&](FidSource& s, const std::string& arg) {
    if (s.stats) return *s.stats;
    if (o.weights.empty()) throw InputError("fid: '" + arg + "' is a set of images: --weights is needed");
    if (!net) net = load_fid_inception(o.weights, resolve_device(o.images_options.device));
    return image_stats(*net, *s.images, o.images_options, world);
  };
  FidStats first = stats_of(sa, o.a);
  FidStats second = stats_of(sb, o.b);
  return {frechet_distance(first, second).distance, first.n, second.n};
}

}  // namespace fm
