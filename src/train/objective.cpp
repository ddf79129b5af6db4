#include "train/objective.h"

#include "train/cfm_objective.h"
#include "train/meanflow_objective.h"
#include "util/error.h"

namespace fm {

void RowShard::check(int64_t n) const {
  TORCH_CHECK(count >= 1 && n % count == 0 && index >= 0 && index < count, "batch of ", n,
              " rows cannot be split in ", count);
}

torch::Tensor RowShard::of(const torch::Tensor& v) const {
  if (!v.defined() || count == 1) return v;
  const int64_t rows = v.size(0) / count;
  return v.narrow(0, index * rows, rows);
}

torch::Tensor starting_noise(const PathConfig& path, const Batch& batch) {
  if ((path.coupling == Coupling::pairs) != batch.x0.defined())
    throw InputError(batch.x0.defined() ? "path.coupling: the data are fm reflow's pairs; train them with "
                                          "path.coupling = pairs"
                                        : "path.coupling: pairs trains on a pairs:DIR data set (fm reflow's output)");
  return batch.x0.defined() ? batch.x0 : torch::randn_like(batch.x);
}

std::unique_ptr<Objective> make_objective(const Config& cfg, const ProbPath& path, const Conditioning& cond) {
  switch (cfg.objective.type) {
    case ObjectiveType::cfm:
      return std::make_unique<CfmObjective>(cfg.path, cfg.time, cfg.model.target, path, cond, cfg.loss);
    case ObjectiveType::meanflow:
      return std::make_unique<MeanFlowObjective>(cfg, path, cond);
  }
  throw std::logic_error("make_objective: unhandled objective.type");
}

}  // namespace fm
