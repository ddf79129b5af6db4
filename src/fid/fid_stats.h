#pragma once
// FID statistics: the mean and covariance of pool3 features over a set of images, and their .npz files in
// pytorch-fid's layout (mu: float64 [D], sigma: float64 [D, D]; fm adds n: int64 scalar and resolution: int64 [2], the
// height and width of the images before the resize to 299x299, which pytorch-fid ignores).
#include <string>
#include <vector>

#include <torch/torch.h>

#include "dist/shard_dir.h"
#include "dist/world.h"
#include "fid/inception.h"

namespace fm {

struct FidStats {
  torch::Tensor mu;     // float64 [D], CPU
  torch::Tensor sigma;  // float64 [D, D], CPU; unbiased (N - 1), as np.cov
  int64_t n = -1;       // images the statistics came from; -1 when unknown (files written by pytorch-fid)
  std::vector<int64_t> resolution;  // {H, W} of those images; empty when unknown (files written by pytorch-fid)
};

// "HxW", or "unknown" for an empty resolution.
std::string resolution_name(const std::vector<int64_t>& resolution);

// Accumulates feature moments in float64 on the features' device, shifted by the first batch's mean so that the
// covariance does not lose digits to cancellation when the features are far from zero.
class FeatureMoments {
 public:
  void add(const torch::Tensor& features);  // [B, D], any floating dtype
  int64_t count() const { return n_; }
  // Needs at least two samples (the covariance is unbiased).
  FidStats finish() const;

 private:
  torch::Tensor shift_, sum_, outer_;  // float64
  int64_t n_ = 0;
};

struct FeatureOptions {
  int64_t batch = 50;
  FidResize resize = FidResize::pytorch_fid;  // how the images reach 299x299 (fid_input)
  bool progress = true;       // a progress line on stderr
  bool keep_features = false; // also return every feature row (float32 [N, 2048], CPU; on rank 0 only)
  dist::World* world = nullptr;  // split the batches over these ranks, each returning the same stats (nullptr: alone)
  dist::ShardDir* shards = nullptr;  // keep each batch's features here and reuse them on resume (nullptr: none)
};

struct FeatureResult {
  FidStats stats;
  torch::Tensor features;  // defined when keep_features
  double seconds = 0;      // wall time of the network passes
};

// Runs `net` over `images` (uint8 [N, C, H, W], C = 3, or 1 which is repeated as pytorch-fid's convert('RGB');
// on any device, moved a batch at a time) under NoGradGuard and accumulates their statistics, whose resolution is
// {H, W}.
FeatureResult compute_fid_features(FidInception& net, const torch::Tensor& images, const FeatureOptions& opt);

// Checks mu [D] and sigma [D, D] (float32 or float64, finite, sigma symmetric); `what` names them in errors.
void check_fid_stats(const FidStats& s, const std::string& what);

// Writes mu and sigma as float64, and n and resolution (when known) as int64.
void write_fid_stats(const std::string& path, const FidStats& s);
// Reads pytorch-fid's or fm's statistics; every fault (missing keys, wrong shapes or dtypes, bad or truncated file)
// throws InputError naming the file.
FidStats read_fid_stats(const std::string& path);

}  // namespace fm
