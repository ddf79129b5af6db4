#include "train/cfm_objective.h"

#include <algorithm>
#include <tuple>

#include "path/coupling.h"
#include "util/error.h"

namespace fm {

namespace {

// The network's output in at least float32 for the loss: a bf16 forward pass (autocast) is promoted, float64 kept.
torch::Tensor at_least_float32(const torch::Tensor& out) {
  return out.to(c10::promoteTypes(out.scalar_type(), torch::kFloat32));
}

}  // namespace

CfmObjective::CfmObjective(const PathConfig& path_cfg, const TimeConfig& time, Target target, const ProbPath& path,
                           const Conditioning& cond, const LossConfig& loss)
    : path_cfg_(path_cfg), time_(time), loss_(loss), target_(target), path_(path), cond_(cond) {
  std::tie(t_lo_, t_hi_) = target_time_range(target_, path);
  if (path_cfg.coupling == Coupling::sb) {
    // SB's bridge noise is not part of alpha_t x1 + sigma_t x0, so only the velocity target accounts for it.
    if (target_ != Target::velocity)
      throw InputError(std::string("path.coupling: sb trains model.target velocity only (got \"") + name_of(target) +
                       "\")");
    t_lo_ = std::max(t_lo_, kSingularEndGap);
    t_hi_ = std::min(t_hi_, 1.0 - kSingularEndGap);
  }
}

torch::Tensor CfmObjective::loss(const Batch& batch, const Predict& predict, RowShard shard) const {
  const int64_t n = batch.x.size(0);
  shard.check(n);
  auto mine = [&](const torch::Tensor& v) { return shard.of(v); };
  auto x0 = starting_noise(path_cfg_, batch);
  auto t = sample_times(time_, n, batch.x.options()).clamp(t_lo_, t_hi_);
  Pairing p = couple(path_cfg_, x0, batch.x, batch.labels);
  auto ps = path_.sample(p.x0, p.x1, t);
  torch::Tensor labels = p.labels;
  if (labels.defined() && cond_.num_classes > 0 && cond_.class_dropout > 0) {
    // Train the unconditional model alongside (the null label) for classifier-free guidance.
    auto drop = torch::rand({n}, batch.x.options()) < cond_.class_dropout;
    labels = torch::where(drop, torch::full_like(labels, cond_.num_classes), labels);
  }
  record("x0", p.x0);
  record("x1", p.x1);
  record("t", t);
  record("labels", labels);
  if (path_cfg_.coupling == Coupling::sb) {
    auto noise = bridge_noise(path_cfg_.sb_sigma, broadcast_time(t, ps.x_t));
    auto eps = torch::randn_like(ps.x_t);
    record("eps", eps);
    auto x_in = ps.x_t + noise.std * eps;
    auto target = ps.u_t + noise.d_std * eps;
    auto out = at_least_float32(predict(mine(t), mine(x_in), mine(labels)));
    return regression_loss(loss_, out, mine(target));
  }
  auto out = at_least_float32(predict(mine(t), mine(ps.x_t), mine(labels)));
  return target_loss(target_, path_, out, mine(p.x0), mine(p.x1), mine(t), PathSample{mine(ps.x_t), mine(ps.u_t)},
                     loss_);
}

}  // namespace fm
