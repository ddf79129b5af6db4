#pragma once
// What `fm sample` and `fm reflow` share: a checkpoint's network run over items, each item's noise and labels drawn
// for the item (so outputs do not depend on the batch size or the number of ranks), the solver settings of the
// checkpoint with the command line's on top, the class choice and guidance checked, and the record of the settings
// that determine the outputs (stored beside the shards, so that a resume with other settings is refused).
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint.h"
#include "dist/rank_batches.h"
#include "sample/generate.h"

namespace fm {

// Solver options given on the command line; whatever is not given comes from the checkpoint's `sample` section.
struct SolveOverrides {
  std::optional<Solver> solver;
  std::optional<TimeGrid> time_grid;
  std::optional<int64_t> steps;
  std::optional<double> atol, rtol;
  std::optional<Diffusion> diffusion;          // euler_maruyama
  std::optional<double> diffusion_norm, sde_last_step;
  bool cuda_graph = false;  // --cuda-graph: replay the network as a CUDA graph, whatever sample.cuda_graph says
};

// The solver settings of a run: the checkpoint's `sample` section with the given options on top, and its path. Warns
// about a given option that does nothing with the resulting solver (--steps/--time-grid with dopri5, --atol/--rtol
// with a fixed-step solver, the diffusion options without euler_maruyama).
SolveSettings resolve_solve(const SampleConfig& from_checkpoint, const SolveOverrides& given);
SolveSettings resolve_solve(const Config& from_checkpoint, const SolveOverrides& given);

struct GenerationOptions {
  std::string checkpoint;
  std::string out_dir = "samples";
  Weights weights = Weights::ema;
  std::string device = "auto";
  int64_t n = 1000;
  int64_t batch = 500;
  uint64_t seed = 0;
  SolveOverrides solve;
  bool resume = false;       // continue an interrupted run from its shards; a finished run with these settings is kept
  bool overwrite = false;    // replace the outputs or shards of an earlier run in out_dir
  std::string classes;       // class-conditional models: "" (null label), "all" (i mod classes), a class index or name
  double cfg_scale = 0.0;    // classifier-free guidance w: (1 + w) v(x|c) - w v(x)
  double cfg_lo = 0.0, cfg_hi = 1.0;  // guidance only at t in [cfg_lo, cfg_hi] (sample/generate.h's Guidance)
};

// The option a stored setting of a generation run comes from, for the message that refuses a resume.
std::string generation_option_of(const std::string& key);

// What a generation run wrote (samples.npz or pairs.npz, and its record samples.json or pairs.json), or what a resume
// read back from the record of a finished run.
struct GenerationSummary {
  int64_t n = 0;
  double mean_nfe = 0, max_nfe = 0;  // per batch, over every batch of the run (resumed ones included)
  double wall_s = 0;
  std::string npz, json;
  nlohmann::json record;  // what the record holds
};

// Reads back the finished run whose files `s` names: false when neither they nor any of `others` exist; InputError
// when one of npz and record is missing (not a finished `command` run), when the record is not JSON, or when it holds
// other settings than `settings` (naming the option, through option_of, of the first that differs); else fills s's
// fields from the record and returns true.
bool read_finished_run(GenerationSummary& s, const std::vector<std::string>& others, const nlohmann::json& settings,
                       const std::function<std::string(const std::string&)>& option_of, const std::string& command);

// The network evaluations of a run's batches, as every rank's batches reach the sink in batch order: their mean over
// batches and their maximum.
struct NfeTally {
  double sum = 0, max = 0;
  int64_t batches = 0;
  void add(const torch::Tensor& per_batch);  // int64, one entry per batch
  double mean() const { return sum / static_cast<double>(std::max<int64_t>(1, batches)); }
};

// Checks a generation run's --out before its checkpoint is read (only that it is a file, first, so that a mistyped
// path creates nothing): creatable, its shards usable with --resume or --overwrite, and none of `outputs` left there
// by an earlier run (`earlier` says whose) unless one of them is given.
void check_generation_out(const GenerationOptions& o, const std::vector<std::string>& outputs,
                          const std::string& earlier, const std::string& resume_keeps);

// Noise for items [first, first + count): item i gets the same noise for a seed whatever the batch size or the number
// of ranks (util/per_item_draw.h). Stream 0 is the starting noise x0; euler_maruyama's step k draws stream 1 + k.
torch::Tensor sample_noise(uint64_t seed, int64_t first, int64_t count, const std::vector<int64_t>& shape,
                           uint64_t stream = 0);

class GenerationRun {
 public:
  // Reads the checkpoint onto `device`, then resolves and checks the classes, guidance and solver (InputError for
  // what cannot be sampled), logging them. The network is loaded by load_network(), after the caller's checks.
  GenerationRun(const GenerationOptions& o, const torch::Device& device);
  ~GenerationRun();

  const CheckpointReader& checkpoint() const { return *ck_; }
  const std::vector<int64_t>& shape() const { return ck_->sample_shape(); }
  const SolveSettings& solve() const { return solve_; }
  int64_t num_classes() const;
  // The number of classes the labels cycle through (--classes all), or 0.
  int64_t cycled_classes() const;
  // The labels of items [first, first + count) on the CPU; undefined without a class.
  torch::Tensor labels(int64_t first, int64_t count) const;
  // What determines the outputs: the checkpoint, weights, seed, n, batch, solver settings, classes and guidance.
  nlohmann::json settings() const;

  void load_network();
  // The starting noise of items b, on the device.
  torch::Tensor noise(const ItemRange& b) const;
  struct Solved {
    torch::Tensor labels;  // on the device; undefined without a class
    OdeResult r;
  };
  // The items' noise x0 (noise(b)) solved to samples, with the items' labels and SDE noise.
  Solved solve_items(const ItemRange& b, const torch::Tensor& x0, const StepCallback& on_step = nullptr);

  struct Classes;  // the class choice (generation.cpp)

 private:
  GenerationOptions o_;
  torch::Device device_;
  std::unique_ptr<CheckpointReader> ck_;
  std::unique_ptr<Classes> classes_;
  SolveSettings solve_;
  std::shared_ptr<VelocityField> model_;
};

}  // namespace fm
