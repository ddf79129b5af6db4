#pragma once
// `fm evaluate --ema-sweep`: a checkpoint evaluated at several EMA lengths. Each length's EMA is reconstructed from the
// run's post-hoc EMA snapshots (checkpoint/phema_reconstruct.h, as `fm ema` does) into SAMPLES_DIR/ema/, then
// evaluated by run_evaluate with the sweep's own options (its samples in SAMPLES_DIR/sigma_<sigma_rel>/, its figures
// in SAMPLES_DIR/sigma_<sigma_rel>/evaluate.json, so --resume continues a sweep length by length); the table has one
// row per length: NLL, FID and NFE of dopri5, and the fixed-step FIDs asked for.
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/evaluate.h"

namespace fm {

struct EmaSweepResult {
  nlohmann::json json;   // the sweep: per length its reconstruction and run_evaluate's JSON
  std::string markdown;  // the table and a line on where the figures and their settings are
};

// `o` as fm evaluate takes it, its checkpoint in a run's checkpoints/ folder (the snapshots are in phema/ beside it)
// and the EMA weights evaluated; o.out, when given, receives the sweep's JSON.
EmaSweepResult run_ema_sweep(const EvaluateOptions& o, const std::vector<double>& sigma_rels);

// The table from run_ema_sweep's JSON.
std::string ema_sweep_markdown(const nlohmann::json& j);

}  // namespace fm
