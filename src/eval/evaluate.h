#pragma once
// `fm evaluate`: one row of the paper's Table 1 for a checkpoint, with the paper's protocol (Lipman et al. 2022,
// section 6.1): bits/dim of the test split by dopri5 with Hutchinson's estimator; FID of N samples drawn by dopri5
// (noise at t=0 integrated to data at t=1) at atol = rtol = 1e-5, with its mean NFE; and FID at fixed-step budgets.
// It calls the library functions behind `fm eval-nll`, `fm sample` and `fm fid`, so each figure is the one those
// commands give with the same settings.
//
// FID is reported with its protocol: K sample sets per setting from seeds seed, seed + 1, ..., seed + K - 1 (FID mean,
// standard deviation and minimum: EDM reports the minimum of three), each set's statistics kept beside its samples;
// the reference statistics named with what they are of (images, split, N, resize, resolution); and precision and
// recall (k = 3) beside FID when the reference's features are given.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/choices.h"

namespace fm {

struct EvaluateOptions {
  std::string checkpoint;
  std::string data;          // NLL data spec ("" = the data the checkpoint was trained on)
  std::string fid_ref;       // FID reference statistics (.npz, mu and sigma as pytorch-fid writes)
  std::string fid_weights;   // FID Inception weights (.pth, or .npz from scripts/export_fid_inception.py)
  std::string fid_ref_features;  // the reference's features (.npy, fm fid-features --save-features): precision, recall
  FidResize resize = FidResize::pytorch_fid;  // how the samples reach the network's 299x299
  bool allow_resolution_mismatch = false;     // FID against a reference of another resolution (refused otherwise)
  // Bits/dim.
  bool nll = true;
  Split split = Split::test;
  int64_t nll_limit = 0;     // N test images evenly spread over the set (0 = all)
  int64_t nll_batch = 256;
  Probe probe = Probe::rademacher;
  int64_t dequant_samples = 1;
  // Samples.
  int64_t num_samples = 50000;  // 0: no samples (no FID, no NFE)
  int64_t seeds = 1;            // sample sets per setting, from seeds seed, seed + 1, ...
  int64_t batch = 500;          // samples per ODE solve (the adaptive steps are shared within a batch)
  int64_t fid_batch = 50;       // images per Inception pass
  double atol = 1e-5, rtol = 1e-5;  // dopri5, for both the likelihood and the samples
  std::vector<int64_t> fixed_steps;  // extra FIDs at these step counts of `fixed_solver`
  Solver fixed_solver = Solver::euler;
  int64_t sde_steps = 0;             // > 0: also FID of euler_maruyama (SDE) samples at this many steps (sample/sde.h)
  // Samples of each setting and seed in a subfolder NAME/seed_S (samples.npz as fm sample writes it, and fid_stats.npz
  // with its provenance fid_stats.json).
  std::string samples_dir = "evaluate_samples";
  // An earlier evaluation into --out and --samples-dir is continued with `resume` (its rows and finished samples kept,
  // interrupted samples continued from their shards; its settings must be these) or replaced with `overwrite`; with
  // neither it is refused before any work.
  bool resume = false;
  bool overwrite = false;
  uint64_t seed = 0;
  Weights weights = Weights::ema;
  std::string device = "auto";
  std::string out;           // JSON results ("" = none); rewritten after each figure, never with fewer rows than it had
};

struct EvaluateResult {
  nlohmann::json json;        // every figure with its settings, and what was skipped and why
  std::string markdown;       // the table row with its header and a line of settings per figure
};

EvaluateResult run_evaluate(const EvaluateOptions& o);

// The Markdown table (header, separator, one row) and the settings lines, from run_evaluate's JSON.
std::string evaluate_markdown(const nlohmann::json& j);
// A setting's FID for a table: the value of one seed, or "mean +- standard deviation, min" over several; "-" without.
std::string fid_cell(const nlohmann::json& setting);

}  // namespace fm
