#pragma once
// `fm fid-features` and `fm fid`: FID Inception statistics of a set of images, written as pytorch-fid writes them
// with a record of their provenance beside them, and the Frechet distance between two sets, each given as
// statistics or as images. Over the ranks of a job the feature passes split their batches (dist/rank_runner.h) and
// every rank gets the statistics one process computes.
#include <string>

#include "config/config.h"
#include "dist/world.h"
#include "fid/fid_stats.h"

namespace fm {

// How a set of images is read and passed through the network.
struct FidImageOptions {
  Split split = Split::train;  // for formats with splits (cifar10, imagenet32)
  int64_t batch = 50;          // images per network pass
  int64_t limit = 0;           // N images evenly spread over the set (0 = all)
  std::string device = "auto";
};

struct FidFeaturesOptions {
  std::string weights;        // FID Inception weights (.pth or .npz)
  std::string images;         // a data spec; "" with a checkpoint: the data it was trained on
  std::string checkpoint;     // takes the data, or the resolution of folder and shapes sets, from this checkpoint
  std::string out;            // statistics .npz; its provenance goes beside it (.json)
  std::string save_features;  // also every image's 2048 features (.npy, float32); "" = not
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
  std::string a, b;     // each: statistics .npz (mu, sigma), an image .npz (arr_0, as fm sample writes) or a data spec
  std::string weights;  // needed when a side is images
  FidImageOptions images_options;
};

struct FidResult {
  double fid = 0;
  int64_t n_a = -1, n_b = -1;  // images behind each side; -1 where a statistics file does not say
};

// A signal stops every rank after the same round of batches (StopRequested); nothing is kept.
FidResult run_fid(const FidOptions& o, dist::World& world);

// The statistics of the images a data spec names (npz:FILE for samples), over the ranks of `world`.
FidStats image_stats(FidInception& net, const DataConfig& spec, const FidImageOptions& o, dist::World& world);

// Where the provenance record of a statistics file goes: beside it, .json for .npz.
std::string provenance_path(const std::string& stats_path);

}  // namespace fm
