#pragma once
// Conditional flow matching (Lipman et al. 2022, eq. 9 and its generalisations): draw noise x0 (or, with
// path.coupling = pairs, take the batch's own), pair it with the batch's data (path.coupling), draw times
// (time.sampler), sample the path (plus SB's bridge noise), drop class labels for classifier-free guidance, run the
// network and compare its output with model.target's target by loss.type.
// Draws it records (Objective::record_draws): "x0" and "x1" (the noise and data as paired), "t", "labels" (after the
// dropout to the null label; absent without labels) and, for the SB coupling, "eps" (the bridge noise's direction).
#include "train/objective.h"

#include "path/target.h"

namespace fm {

class CfmObjective : public Objective {
 public:
  // Checks the combination of keys (throws InputError naming the key).
  CfmObjective(const PathConfig& path_cfg, const TimeConfig& time, Target target, const ProbPath& path,
               const Conditioning& cond, const LossConfig& loss = {});
  torch::Tensor loss(const Batch& batch, const Predict& predict, RowShard shard = {}) const override;
  bool needs_host() const override {
    return path_cfg_.coupling != Coupling::independent && path_cfg_.coupling != Coupling::pairs;
  }

 private:
  PathConfig path_cfg_;
  TimeConfig time_;
  LossConfig loss_;
  Target target_;
  const ProbPath& path_;
  Conditioning cond_;
  double t_lo_, t_hi_;
};

}  // namespace fm
