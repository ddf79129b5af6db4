#include "fid/fid_run.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
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

namespace fs = std::filesystem;

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

// An "about" record with nothing known.
nlohmann::json unknown_about() {
  return {{"images", nullptr}, {"split", nullptr},      {"n", nullptr},         {"subset", nullptr},
          {"resize", nullptr}, {"resolution", nullptr}, {"provenance", nullptr}};
}

// What the record beside a statistics or features file says they are of; fields it lacks, or holds in another
// shape than fid-features writes, stay null.
nlohmann::json about_from_record(const std::string& file) {
  auto about = unknown_about();
  const std::string path = provenance_path(file);
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return about;
  nlohmann::json record;
  try {
    std::ifstream(path) >> record;
  } catch (const nlohmann::json::exception&) {
    spdlog::warn("{}: not a JSON record; what {} is of is unknown", path, file);
    return about;
  }
  if (!record.is_object()) return about;
  auto take = [&](const char* key, bool ok) {
    if (record.contains(key) && ok) about[key] = record[key];
  };
  auto str = [&](const char* key) { return record.contains(key) && record[key].is_string(); };
  take("images", str("images"));
  take("split", str("split"));
  take("subset", str("subset"));
  take("n", record.contains("n") && record["n"].is_number_integer());
  take("resize", str("resize") && choice_from<FidResize>(record["resize"].get<std::string>()).has_value());
  const auto& r = record.contains("resolution") ? record["resolution"] : nlohmann::json();
  take("resolution", r.is_array() && r.size() == 2 && r[0].is_number_integer() && r[1].is_number_integer());
  about["provenance"] = path;
  return about;
}

nlohmann::json resolution_json(const std::vector<int64_t>& r) {
  return r.size() == 2 ? nlohmann::json(r) : nlohmann::json(nullptr);
}

std::string field(const nlohmann::json& about, const char* key) {
  const auto& v = about.contains(key) ? about[key] : nlohmann::json();
  if (v.is_null()) return "";
  return v.is_string() ? v.get<std::string>() : v.dump();
}

std::string resolution_of(const nlohmann::json& about) {
  const auto& r = about.contains("resolution") ? about["resolution"] : nlohmann::json();
  if (r.is_null()) return "unknown";
  return std::to_string(r[0].get<int64_t>()) + "x" + std::to_string(r[1].get<int64_t>());
}

// One side of fm fid, as given: statistics, features or images (loaded once weights are known to be there).
struct FidSide {
  std::string arg, kind;
  std::optional<FidStats> stats;
  torch::Tensor features;  // features files; images' features when both sides can have them (rank 0)
  std::optional<DataConfig> spec;
  std::optional<Dataset> images;
  nlohmann::json about;
};

FidSide classify(const std::string& arg) {
  FidSide s;
  s.arg = arg;
  std::error_code ec;
  if (fs::is_regular_file(arg, ec)) {
    if (fs::path(arg).extension() == ".npy") {
      s.kind = "features";
      s.features = read_features(arg);
      FeatureMoments m;
      m.add(s.features);
      s.stats = m.finish();
      s.about = about_from_record(arg);
      s.about["n"] = s.features.size(0);
      return s;
    }
    auto keys = npz_keys(arg);
    bool has_mu = false, has_arr0 = false;
    for (const auto& k : keys) has_mu |= (k == "mu"), has_arr0 |= (k == "arr_0");
    if (!has_mu && has_arr0) {
      s.kind = "images";
      s.spec = parse_data_spec("npz:" + arg);
    } else {
      s.kind = "statistics";
      auto read = read_stats_with_provenance(arg);
      s.stats = read.stats;
      s.about = read.about;
    }
    return s;
  }
  if (arg.find(':') == std::string::npos)
    throw InputError("'" + arg + "': no such file (expected a statistics .npz, a features .npy, an image .npz or a "
                     "data spec FORMAT:PATH)");
  s.kind = "images";
  s.spec = parse_data_spec(arg);
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
  fs::path p(stats_path);
  if (p.extension() == ".npz" || p.extension() == ".npy") return p.replace_extension(".json").string();
  return stats_path + ".json";
}

nlohmann::json describe_images(const Dataset& ds, const DataConfig& spec, const FidImageOptions& o) {
  auto about = unknown_about();
  about["images"] = data_spec(spec);
  if (has_splits(spec.format)) about["split"] = name_of(o.split);
  about["n"] = ds.size();
  about["subset"] = ds.subset.empty() ? "all" : ds.subset;
  about["resize"] = name_of(o.resize);
  about["resolution"] = {ds.images.size(2), ds.images.size(3)};
  return about;
}

StatsWithProvenance read_stats_with_provenance(const std::string& path) {
  StatsWithProvenance s;
  s.stats = read_fid_stats(path);
  s.about = about_from_record(path);
  // The statistics file's own n and resolution are what the numbers came from.
  if (s.stats.n >= 0) s.about["n"] = s.stats.n;
  if (!s.stats.resolution.empty()) s.about["resolution"] = resolution_json(s.stats.resolution);
  return s;
}

torch::Tensor read_features(const std::string& path) {
  auto f = read_npy(path);
  if (f.dim() != 2 || !torch::isFloatingType(f.scalar_type()) || f.size(0) < 2)
    throw file_error(path, "expected features float [N, D] with N >= 2 (as fm fid-features --save-features writes), "
                           "got " + std::string(c10::toString(f.scalar_type())) + " " + c10::str(f.sizes()));
  if (!torch::isfinite(f).all().item<bool>()) throw file_error(path, "features have non-finite values");
  return f;
}

void check_comparable(const nlohmann::json& about_a, const std::string& a_name, const nlohmann::json& about_b,
                      const std::string& b_name, bool allow) {
  const std::string ra = resolution_of(about_a), rb = resolution_of(about_b);
  if (ra == "unknown" && rb == "unknown") {
    spdlog::warn("neither {} nor {} records an image resolution (pytorch-fid's statistics do not): fm cannot check that "
                 "they match", a_name, b_name);
  } else if (ra == "unknown" || rb == "unknown") {
    const bool a_unknown = ra == "unknown";
    spdlog::warn("{} records no image resolution (pytorch-fid's statistics do not): fm cannot check that it matches "
                 "{}'s {}", a_unknown ? a_name : b_name, a_unknown ? b_name : a_name, a_unknown ? rb : ra);
  } else if (ra != rb) {
    const std::string msg = a_name + " is of " + ra + " images, " + b_name + " of " + rb +
                            ": an FID between resolutions measures the resize, not the images";
    if (!allow) throw InputError(msg + "; pass --allow-resolution-mismatch to compare them anyway");
    spdlog::warn("{} (--allow-resolution-mismatch)", msg);
  }
  const std::string za = field(about_a, "resize"), zb = field(about_b, "resize");
  if (!za.empty() && !zb.empty() && za != zb)
    spdlog::warn("{} was resized to 299x299 by {}, {} by {}: the FID includes the difference between the resizes",
                 a_name, za, b_name, zb);
}

std::string about_line(const nlohmann::json& about) {
  std::string images = field(about, "images"), split = field(about, "split"), n = field(about, "n");
  std::string resize = field(about, "resize");
  std::string s = images.empty() ? "images not recorded" : images;
  s += " (" + (split.empty() ? std::string(images.empty() ? "split not recorded" : "no split") : split + " split");
  s += ", " + (n.empty() ? std::string("number of images not recorded") : n + " images");
  s += ", resize " + (resize.empty() ? std::string("not recorded") : resize);
  s += ", " + (resolution_of(about) == "unknown" ? std::string("resolution not recorded") : resolution_of(about));
  return s + ")";
}

void write_stats_with_provenance(const std::string& path, const FidStats& stats, nlohmann::json record) {
  write_fid_stats(path, stats);
  write_file_atomic(provenance_path(path), record.dump(2) + "\n");
}

ImageFeatures image_features(FidInception& net, const DataConfig& spec, const FidImageOptions& o, dist::World& world,
                             bool keep_features) {
  auto ds = load_images(spec, o);
  FeatureOptions fo;
  fo.batch = o.batch;
  fo.resize = o.resize;
  fo.world = &world;
  fo.keep_features = keep_features;
  return {compute_fid_features(net, ds.images, fo), describe_images(ds, spec, o)};
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
  const std::string features_record = o.save_features.empty() ? "" : provenance_path(o.save_features);
  if (!o.save_features.empty()) {
    prepare_output_file(o.save_features, "--save-features");
    prepare_output_file(features_record, "--save-features (provenance record)");
  }
  dist::ShardDir shards(o.out + ".shards");
  shards.check_usable(o.resume, o.overwrite);
  auto net = load_fid_inception(o.weights, device);  // a bad weights file fails before a long data load
  auto ds = load_images(spec, o.images_options);
  // What decides the features: a resume must have the same.
  nlohmann::json settings = {{"images", data_spec(spec)},
                             {"split", name_of(o.images_options.split)},
                             {"limit", o.images_options.limit},
                             {"batch", o.images_options.batch},
                             {"resize", name_of(o.images_options.resize)},
                             {"n", ds.size()}};
  record_file(settings, "weights", o.weights);
  shards.prepare(o.resume, settings, {"weights"}, features_option_of, world);
  FeatureOptions fo;
  fo.batch = o.images_options.batch;
  fo.resize = o.images_options.resize;
  fo.keep_features = !o.save_features.empty();
  fo.world = &world;
  fo.shards = &shards;
  auto f = compute_fid_features(net, ds.images, fo);
  r.stats = f.stats;
  r.seconds = f.seconds;
  if (!world.is_main()) return r;
  auto record = describe_images(ds, spec, o.images_options);
  record.erase("provenance");
  record["statistics"] = o.out;
  if (fo.keep_features) record["features"] = o.save_features;
  record_file(record, "weights", o.weights);
  record_software(record, device);
  write_stats_with_provenance(o.out, r.stats, record);
  if (fo.keep_features) {
    write_npy(o.save_features, f.features);
    if (features_record != r.record) write_file_atomic(features_record, record.dump(2) + "\n");
  }
  shards.remove();
  return r;
}

FidResult run_fid(const FidOptions& o, dist::World& world) {
  install_stop_handlers();
  FidSide a = classify(o.a), b = classify(o.b);
  for (const auto* s : {&a, &b})
    if (s->spec && o.weights.empty())
      throw InputError("fid: '" + s->arg + "' is a set of images: --weights is needed");
  for (auto* s : {&a, &b})
    if (s->spec) {
      s->images = load_images(*s->spec, o.images_options);
      s->about = describe_images(*s->images, *s->spec, o.images_options);
    }
  for (auto* s : {&a, &b}) {
    s->about["source"] = s->arg;
    s->about["kind"] = s->kind;
  }
  check_comparable(a.about, "A (" + o.a + ")", b.about, "B (" + o.b + ")", o.allow_resolution_mismatch);

  // Precision and recall need every feature: images keep theirs only when the other side has features too.
  const bool both_features = a.kind != "statistics" && b.kind != "statistics";
  std::optional<FidInception> net;
  for (auto* s : {&a, &b}) {
    if (!s->images) continue;
    if (!net) net = load_fid_inception(o.weights, resolve_device(o.images_options.device));
    FeatureOptions fo;
    fo.batch = o.images_options.batch;
    fo.resize = o.images_options.resize;
    fo.world = &world;
    fo.keep_features = both_features;
    auto f = compute_fid_features(*net, s->images->images, fo);
    s->stats = f.stats;
    s->features = f.features;
  }
  FidResult r;
  r.fid = frechet_distance(*a.stats, *b.stats).distance;
  r.n_a = a.stats->n;
  r.n_b = b.stats->n;
  r.about_a = a.about;
  r.about_b = b.about;
  if (!both_features) {
    r.precision_recall_skipped = std::string(a.kind == "statistics" ? "A" : "B") +
                                 " is statistics (mu, sigma) without features: give features (.npy) or images";
  } else if (!world.is_main()) {
    r.precision_recall_skipped = "computed on rank 0";
  } else if (std::min(a.features.size(0), b.features.size(0)) <= kPrecisionRecallK) {
    r.precision_recall_skipped = "k = " + std::to_string(kPrecisionRecallK) + " nearest neighbours need more than " +
                                 std::to_string(kPrecisionRecallK) + " images on each side";
  } else {
    // On the network's device (or the CPU without one), in the wider of the two dtypes.
    const auto device = net ? (*net)->Conv2d_1a_3x3->conv->weight.device() : torch::Device(torch::kCPU);
    const auto dtype = torch::promote_types(a.features.scalar_type(), b.features.scalar_type());
    r.precision_recall = precision_recall(b.features.to(device, dtype), a.features.to(device, dtype));
  }
  return r;
}

}  // namespace fm
