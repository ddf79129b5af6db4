#include "sample/generate.h"

#include "sample/graphed_velocity.h"
#include "solver/mean_flow.h"
#include "util/error.h"

namespace fm {

namespace {

// Steps of the network's average velocity (solver/mean_flow.h), eagerly (sample.cuda_graph does not apply); guidance
// mixes the conditional and unconditional average velocities as it mixes velocities.
OdeResult generate_mean_flow(VelocityField& model, const torch::Tensor& x0, const torch::Tensor& labels,
                             const SolveSettings& s, double cfg_scale, const StepCallback& on_step) {
  if (!model.has_second_time())
    throw InputError("solver meanflow: the network has no second time (train it with objective.type meanflow and "
                     "model.mlp/unet.second_time true); use an ODE solver");
  const int64_t b = x0.size(0);
  torch::Tensor null_labels;
  if (labels.defined() && cfg_scale != 0.0) null_labels = torch::full_like(labels, model.num_classes());
  MeanVelocityFunc u = [&](double t, double r, const torch::Tensor& x) {
    auto tt = torch::full({b}, t, x.options()), rr = torch::full({b}, r, x.options());
    if (!null_labels.defined()) return model.forward_mean(tt, rr, x, labels);
    auto both = model.forward_mean(torch::cat({tt, tt}), torch::cat({rr, rr}), torch::cat({x, x}),
                                   torch::cat({labels, null_labels}));
    return (1.0 + cfg_scale) * both.narrow(0, 0, b) - cfg_scale * both.narrow(0, b, b);
  };
  return solve_mean_flow(u, x0, sampling_grid(s), on_step);
}

}  // namespace

SolveSettings solve_settings(const SampleConfig& c) {
  return {c.solver, c.steps, c.atol, c.rtol, c.time_grid, c.cuda_graph};
}

std::vector<double> sampling_grid(const SolveSettings& s) {
  if (s.solver == Solver::dopri5) return {0.0, 1.0};
  switch (s.time_grid) {
    case TimeGrid::uniform:
      return uniform_grid(0.0, 1.0, s.steps);
    case TimeGrid::edm:
      return edm_grid(s.steps);
  }
  throw std::logic_error("sampling_grid: unhandled time grid");
}

OdeResult generate(VelocityField& model, const torch::Tensor& x0, const torch::Tensor& labels, const SolveSettings& s,
                   double cfg_scale, const StepCallback& on_step) {
  torch::NoGradGuard ng;
  bool was_training = model.is_training();
  model.eval();
  if (s.solver == Solver::meanflow) {
    auto r = generate_mean_flow(model, x0, labels, s, cfg_scale, on_step);
    model.train(was_training);
    return r;
  }
  const int64_t b = x0.size(0);
  torch::Tensor null_labels;
  if (labels.defined() && cfg_scale != 0.0) null_labels = torch::full_like(labels, model.num_classes());
  GraphedVelocity velocity(
      [&](const torch::Tensor& tt, const torch::Tensor& x) {
        if (!null_labels.defined()) return model(tt, x, labels);
        // One batched call for the conditional and unconditional velocities.
        auto v = model(torch::cat({tt, tt}), torch::cat({x, x}), torch::cat({labels, null_labels}));
        auto vc = v.narrow(0, 0, b), vu = v.narrow(0, b, b);
        return (1.0 + cfg_scale) * vc - cfg_scale * vu;
      },
      s.cuda_graph, x0.device());
  OdeFunc f = [&](double t, const torch::Tensor& x) { return velocity(t, x); };
  Dopri5Options opt;
  opt.atol = s.atol;
  opt.rtol = s.rtol;
  auto r = solve_ode(f, x0, sampling_grid(s), s.solver, opt, on_step);
  r.graphed = velocity.graphed();
  model.train(was_training);
  return r;
}

}  // namespace fm
