#pragma once
// `fm fid-features` and `fm fid`: FID Inception statistics of a set of images, written as pytorch-fid writes them
// with a record of their provenance beside them, and the Frechet distance between two sets, each given as
// statistics, features or images, with precision and recall where both sides have features. Over the ranks of a job
// the feature passes split their batches (dist/rank_runner.h) and every rank gets the statistics one process computes.
//
// Every FID names what each side is of ("about" records): the images (data spec), split, number of images, the resize
// to 299x299 and the images' resolution, as far as they are known. Two sides of different recorded resolutions are
// refused unless asked for by name; a side that records none (pytorch-fid's files) is accepted with a warning.
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "config/choices.h"
#include "config/config.h"
#include "data/dataset.h"
#include "dist/world.h"
#include "fid/fid_stats.h"
#include "fid/precision_recall.h"

namespace fm {

// How a set of images is read and passed through the network.
struct FidImageOptions {
  Split split = Split::train;  // for formats with splits (cifar10, imagenet32)
  int64_t batch = 50;          // images per network pass
  int64_t limit = 0;           // N images evenly spread over the set (0 = all)
  FidResize resize = FidResize::pytorch_fid;
  std::string device = "auto";
};

struct FidFeaturesOptions {
  std::string weights;        // FID Inception weights (.pth or .npz)
  std::string images;         // a data spec; "" with a checkpoint: the data it was trained on
  std::string checkpoint;     // takes the data, or the resolution of folder and shapes sets, from this checkpoint
  std::string out;            // statistics .npz; its provenance goes beside it (.json)
  std::string save_features;  // also every image's 2048 features (.npy, float32), the record beside them too; "" = not
  FidImageOptions images_options;
  // The features of finished batches are kept in <out>.shards/ while the run goes on, so that a stopped run continues
  // with `resume`; `overwrite` discards those of an earlier run.
  bool resume = false, overwrite = false;
};

struct FidFeaturesResult {
  FidStats stats;
  std::string record;  // the provenance file
  double seconds = 0;  // the network passes
  std::string device;
};

// Rank 0 writes the outputs; every output is checked before the features are computed. A signal stops every rank
// after the same round of batches (StopRequested), keeping the finished batches' features.
FidFeaturesResult run_fid_features(const FidFeaturesOptions& o, dist::World& world);

struct FidOptions {
  // A: the generated set, B: the reference (precision is the share of A inside B's manifold, recall of B inside A's).
  // Each: statistics .npz (mu, sigma), features .npy (fm fid-features --save-features), an image .npz (arr_0, as
  // fm sample writes) or a data spec.
  std::string a, b;
  std::string weights;  // needed when a side is images
  FidImageOptions images_options;
  bool allow_resolution_mismatch = false;
};

struct FidResult {
  double fid = 0;
  int64_t n_a = -1, n_b = -1;  // images behind each side; -1 where a statistics file does not say
  nlohmann::json about_a, about_b;               // what each side is of (see describe_images)
  std::optional<PrecisionRecall> precision_recall;  // when both sides have features
  std::string precision_recall_skipped;          // why not, otherwise
};

// A signal stops every rank after the same round of batches (StopRequested); nothing is kept.
FidResult run_fid(const FidOptions& o, dist::World& world);

// The statistics (and, with keep_features, the features on rank 0) of the images a data spec names (npz:FILE for
// samples), over the ranks of `world`, with what they are of in `about`.
struct ImageFeatures {
  FeatureResult result;
  nlohmann::json about;
};
ImageFeatures image_features(FidInception& net, const DataConfig& spec, const FidImageOptions& o, dist::World& world,
                             bool keep_features);

// What a set of images is of, as every FID output names it: {"images": spec, "split": name or null, "n",
// "subset", "resize": name or null, "resolution": [H, W] or null, "provenance": record path or null}.
nlohmann::json describe_images(const Dataset& ds, const DataConfig& spec, const FidImageOptions& o);

// Reference statistics read with what they are of: the record fid-features wrote beside them (provenance_path), and
// the n and resolution of the file itself; fields nobody recorded are null (pytorch-fid's files).
struct StatsWithProvenance {
  FidStats stats;
  nlohmann::json about;
};
StatsWithProvenance read_stats_with_provenance(const std::string& path);

// Features [N, 2048] of `path` (.npy, as fid-features --save-features writes), InputError naming the file unless
// floating [N, D] with N >= 2 and finite.
torch::Tensor read_features(const std::string& path);

// Refuses (InputError) two sides whose recorded resolutions differ, naming both, unless `allow` (then a warning);
// warns when a side records none, and when they record different resizes. `a_name`, `b_name` name the sides.
void check_comparable(const nlohmann::json& about_a, const std::string& a_name, const nlohmann::json& about_b,
                      const std::string& b_name, bool allow);

// "cifar10:/data (train split, 50000 images, resize pytorch-fid, 32x32)"; unknown fields say so.
std::string about_line(const nlohmann::json& about);

// Where the provenance record of a statistics or features file goes: beside it, .json for .npz and .npy.
std::string provenance_path(const std::string& stats_path);

// Writes statistics with their provenance record beside them; `record` gets the resize, resolution and n.
void write_stats_with_provenance(const std::string& path, const FidStats& stats, nlohmann::json record);

}  // namespace fm
