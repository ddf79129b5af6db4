#pragma once
// `fm sample`: draw N samples from a checkpoint in batches and write them for tools (.npz) and people (PNG), with a
// record of how they were made (samples.json). Shards are kept as batches finish, so an interrupted or preempted run
// continues with --resume; the settings are stored beside the shards and a resume with other settings is refused.
#include <string>

#include <nlohmann/json.hpp>

#include "dist/world.h"
#include "sample/generation.h"

namespace fm {

struct SampleOptions : GenerationOptions {
  std::string png_dir;       // non-empty: also one PNG per image here
  int64_t grid_n = 64;       // images shown in samples.png
  bool straightness = false; // also measure the trajectories' straightness (sample/straightness.h)
  // 2-D models: the toy distribution ("toy:NAME") the samples are measured against in samples.json (toy_metrics: the
  // sliced Wasserstein distance, the fraction on the checkerboard); "" = the checkpoint's data when it is a toy.
  std::string toy_reference;
};

struct SampleSummary : GenerationSummary {  // npz: OUT/samples.npz, json: OUT/samples.json
  double straightness = 0;     // mean over the samples solved in this run (when asked for)
  nlohmann::json toy_metrics;  // 2-D models with a reference distribution (sample/toy_metrics.h); else null
  std::string png;
};

// Over the ranks of `world` (nullptr: this process alone) each rank solves its share of the batches, with the noise
// each sample has in one process, and rank 0 writes the outputs, the same bytes one process writes. With o.resume, a
// run that has finished with the same settings is not redone: its summary is read back from samples.json.
SampleSummary run_sampling(const SampleOptions& o, dist::World* world = nullptr);

// The checks of o.out_dir that run_sampling makes before any work (creating it): the samples or shards of an earlier
// run are continued only with o.resume and replaced only with o.overwrite; InputError otherwise.
void check_sample_out(const SampleOptions& o);

}  // namespace fm
