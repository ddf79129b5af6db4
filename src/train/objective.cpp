#include "train/objective.h"

#include "train/cfm_objective.h"
#include "train/meanflow_objective.h"

namespace fm {

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
