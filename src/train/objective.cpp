#include "train/objective.h"

#include "train/cfm_objective.h"

namespace fm {

std::unique_ptr<Objective> make_objective(const Config& cfg, const ProbPath& path, const Conditioning& cond) {
  return std::make_unique<CfmObjective>(cfg.path, cfg.time, cfg.model.target, path, cond, cfg.loss);
}

}  // namespace fm
