#include "train/objective.h"

#include "train/cfm_objective.h"
#include "train/meanflow_objective.h"

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
