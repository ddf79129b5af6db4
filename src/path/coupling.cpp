#include "path/coupling.h"

#include "path/assignment.h"

namespace fm {

namespace {

Pairing sample_from_plan(const torch::Tensor& plan, const torch::Tensor& x0, const torch::Tensor& x1,
                         const torch::Tensor& labels) {
  const int64_t n = x1.size(0), m = plan.size(1);
  auto idx = torch::multinomial(plan.flatten().to(torch::kFloat32), n, /*replacement=*/true);
  auto i = torch::div(idx, m, "floor"), j = torch::remainder(idx, m);
  return {x0.index_select(0, i), x1.index_select(0, j), labels.defined() ? labels.index_select(0, j) : labels};
}

// The cost in float32 whatever the batch's dtype: bf16 distances would tie many pairs.
torch::Tensor cost_of(const torch::Tensor& x0, const torch::Tensor& x1) {
  return squared_distances(x0.to(torch::kFloat32), x1.to(torch::kFloat32));
}

}  // namespace

Pairing couple(const PathConfig& cfg, const torch::Tensor& x0, const torch::Tensor& x1, const torch::Tensor& labels) {
  switch (cfg.coupling) {
    case Coupling::independent:
    case Coupling::pairs:
      return {x0, x1, labels};
    case Coupling::ot: {
      // assignment(cost)[i] is the data index for noise i; invert it so that data keeps its order (and its labels).
      auto col = assignment(cost_of(x0, x1));
      auto row_of = torch::empty_like(col).scatter_(0, col, torch::arange(col.size(0), col.options()));
      return {x0.index_select(0, row_of), x1, labels};
    }
    case Coupling::sinkhorn:
      return sample_from_plan(sinkhorn_plan(cost_of(x0, x1), cfg.ot_reg, cfg.sinkhorn_iters), x0, x1, labels);
    case Coupling::sb: {
      const double reg = 2.0 * cfg.sb_sigma * cfg.sb_sigma;
      return sample_from_plan(sinkhorn_plan(cost_of(x0, x1), reg, cfg.sinkhorn_iters), x0, x1, labels);
    }
  }
  throw std::logic_error("couple: unhandled path.coupling");
}

BridgeNoise bridge_noise(double sigma, const torch::Tensor& t) {
  auto r = torch::sqrt(t * (1.0 - t));
  return {sigma * r, sigma * (1.0 - 2.0 * t) / (2.0 * r)};
}

}  // namespace fm
