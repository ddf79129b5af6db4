#pragma once
// `fm sample`: draw N samples from a checkpoint in batches and write them for tools (.npz) and people (PNG), with a
// record of how they were made (samples.json). Shards are kept as batches finish, so an interrupted or preempted run
// continues with --resume; the settings are stored beside the shards and a resume with other settings is refused.
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "dist/world.h"
#include "sample/generate.h"

namespace fm {

// Solver options given on the command line; whatever is not given comes from the checkpoint's `sample` section.
struct SolveOverrides {
  std::optional<Solver> solver;
  std::optional<TimeGrid> time_grid;
  std::optional<int64_t> steps;
  std::optional<double> atol, rtol;
  bool cuda_graph = false;  // --cuda-graph: replay the network as a CUDA graph, whatever sample.cuda_graph says
};

struct SampleOptions {
  std::string checkpoint;
  std::string out_dir = "samples";
  Weights weights = Weights::ema;
  std::string device = "auto";
  int64_t n = 1000;
  int64_t batch = 500;
  uint64_t seed = 0;
  SolveOverrides solve;
  std::string png_dir;       // non-empty: also one PNG per image here
  bool resume = false;       // continue an interrupted run from its shards; a finished run with these settings is kept
  bool overwrite = false;    // replace the samples or shards of an earlier run in out_dir
  std::string classes;       // class-conditional models: "" (null label), "all" (i mod classes), a class index or name
  double cfg_scale = 0.0;    // classifier-free guidance w: (1 + w) v(x|c) - w v(x)
  int64_t grid_n = 64;       // images shown in samples.png
  bool straightness = false; // also measure the trajectories' straightness (sample/straightness.h)
};

struct SampleSummary {
  int64_t n = 0;
  double mean_nfe = 0, max_nfe = 0;  // per batch, over every batch of the run (resumed ones included)
  double straightness = 0;           // mean over the samples solved in this run (when asked for)
  double wall_s = 0;
  std::string npz, png, json;
  nlohmann::json record;  // what samples.json holds
};

// Over the ranks of `world` (nullptr: this process alone) each rank solves its share of the batches, with the noise
// each sample has in one process, and rank 0 writes the outputs, the same bytes one process writes. With o.resume, a
// run that has finished with the same settings is not redone: its summary is read back from samples.json.
SampleSummary run_sampling(const SampleOptions& o, dist::World* world = nullptr);

// The checks of o.out_dir that run_sampling makes before any work (creating it): the samples or shards of an earlier
// run are continued only with o.resume and replaced only with o.overwrite; InputError otherwise.
void check_sample_out(const SampleOptions& o);

// The solver settings of a run: the checkpoint's `sample` section with the given options on top. Warns about a given
// option that does nothing with the resulting solver (--steps/--time-grid with dopri5, --atol/--rtol with fixed steps).
SolveSettings resolve_solve(const SampleConfig& from_checkpoint, const SolveOverrides& given);

// Noise for samples [first, first + count): sample i gets the same noise for a seed whatever the batch size or the
// number of ranks (util/per_item_draw.h).
torch::Tensor sample_noise(uint64_t seed, int64_t first, int64_t count, const std::vector<int64_t>& shape);

}  // namespace fm
