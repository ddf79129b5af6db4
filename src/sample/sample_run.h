#pragma once
// `fm sample`: draw N samples from a checkpoint in batches and write them for tools (.npz) and people (PNG).
#include <string>

#include "sample/generate.h"

namespace fm {

struct SampleOptions {
  std::string checkpoint;
  std::string out_dir = "samples";
  std::string weights = "ema";  // ema | raw
  std::string device = "auto";
  int64_t n = 1000;
  int64_t batch = 500;
  uint64_t seed = 0;
  SolveSettings solve;
  std::string png_dir;       // non-empty: also one PNG per image here
  bool resume = false;       // keep finished shards of an interrupted run in out_dir/shards
  std::string classes;       // class-conditional models: "" (null label), "all" (i mod classes) or a class index
  double cfg_scale = 0.0;    // classifier-free guidance w: (1 + w) v(x|c) - w v(x)
  bool straightness = false; // also measure the trajectories' straightness (sample/straightness.h)
};

struct SampleSummary {
  int64_t n = 0;
  double mean_nfe = 0, max_nfe = 0;
  double straightness = 0;  // mean over the samples solved in this run (when asked for)
  std::string npz, png;
};

SampleSummary run_sampling(const SampleOptions& o);

// Noise for samples [first, first + count): the same sample index gets the same noise for a seed, whatever the batch
// size, because noise is drawn in fixed chunks from generators seeded by (seed, chunk).
torch::Tensor sample_noise(uint64_t seed, int64_t first, int64_t count, const std::vector<int64_t>& shape);

}  // namespace fm
