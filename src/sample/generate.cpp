#include "sample/generate.h"

#include "sample/graphed_velocity.h"
#include "sample/sde.h"
#include "solver/mean_flow.h"
#include "util/error.h"

namespace fm {

namespace {

// Steps of the network's average velocity (solver/mean_flow.h), eagerly (sample.cuda_graph does not apply); guidance
// mixes the conditional and unconditional average velocities as it mixes velocities, on the steps that start inside
// its interval.
OdeResult generate_mean_flow(VelocityField& model, const torch::Tensor& x0, const torch::Tensor& labels,
                             const SolveSettings& s, const Guidance& guidance, const StepCallback& on_step) {
  if (!model.has_second_time())
    throw InputError("solver meanflow: the network has no second time (train it with objective.type meanflow and "
                     "model.mlp/unet.second_time true); use an ODE solver");
  const int64_t b = x0.size(0);
  torch::Tensor null_labels;
  if (labels.defined() && guidance.scale != 0.0) null_labels = torch::full_like(labels, model.num_classes());
  MeanVelocityFunc u = [&](double t, double r, const torch::Tensor& x) {
    auto tt = torch::full({b}, t, x.options()), rr = torch::full({b}, r, x.options());
    if (!null_labels.defined() || !guidance.active_at(t)) return model.forward_mean(tt, rr, x, labels);
    auto both = model.forward_mean(torch::cat({tt, tt}), torch::cat({rr, rr}), torch::cat({x, x}),
                                   torch::cat({labels, null_labels}));
    return (1.0 + guidance.scale) * both.narrow(0, 0, b) - guidance.scale * both.narrow(0, b, b);
  };
  return solve_mean_flow(u, x0, sampling_grid(s), on_step);
}

}  // namespace

SolveSettings solve_settings(const SampleConfig& c) {
  SolveSettings s;
  s.solver = c.solver;
  s.steps = c.steps;
  s.atol = c.atol;
  s.rtol = c.rtol;
  s.time_grid = c.time_grid;
  s.cuda_graph = c.cuda_graph;
  s.diffusion = c.diffusion;
  s.diffusion_norm = c.diffusion_norm;
  s.sde_last_step = c.sde_last_step;
  return s;
}

SolveSettings solve_settings(const Config& c) {
  SolveSettings s = solve_settings(c.sample);
  s.path = make_path(c.path);
  return s;
}

std::vector<double> sampling_grid(const SolveSettings& s) {
  if (s.solver == Solver::dopri5) return {0.0, 1.0};
  if (s.solver == Solver::euler_maruyama) return sde_grid(s);
  switch (s.time_grid) {
    case TimeGrid::uniform:
      return uniform_grid(0.0, 1.0, s.steps);
    case TimeGrid::edm:
      return edm_grid(s.steps);
  }
  throw std::logic_error("sampling_grid: unhandled time grid");
}

OdeResult generate(VelocityField& model, const torch::Tensor& x0, const torch::Tensor& labels, const SolveSettings& s,
                   const Guidance& guidance, const StepCallback& on_step, const StepNoise& sde_noise) {
  torch::NoGradGuard ng;
  bool was_training = model.is_training();
  model.eval();
  if (s.solver == Solver::meanflow) {
    auto r = generate_mean_flow(model, x0, labels, s, guidance, on_step);
    model.train(was_training);
    return r;
  }
  const int64_t b = x0.size(0);
  torch::Tensor null_labels;
  if (labels.defined() && guidance.scale != 0.0) null_labels = torch::full_like(labels, model.num_classes());
  // The conditional (or unconditional) velocity, and where guidance applies, the guided one: one batched call for the
  // conditional and unconditional velocities. Each is its own graph, as the two calls differ in shape.
  GraphedVelocity plain([&](const torch::Tensor& tt, const torch::Tensor& x) { return model(tt, x, labels); },
                        s.cuda_graph, x0.device());
  GraphedVelocity guided(
      [&](const torch::Tensor& tt, const torch::Tensor& x) {
        auto v = model(torch::cat({tt, tt}), torch::cat({x, x}), torch::cat({labels, null_labels}));
        auto vc = v.narrow(0, 0, b), vu = v.narrow(0, b, b);
        return (1.0 + guidance.scale) * vc - guidance.scale * vu;
      },
      s.cuda_graph && null_labels.defined(), x0.device());
  OdeFunc f = [&](double t, const torch::Tensor& x) {
    return null_labels.defined() && guidance.active_at(t) ? guided(t, x) : plain(t, x);
  };
  OdeResult r;
  if (s.solver == Solver::euler_maruyama) {
    r = solve_sde(f, x0, s, sde_noise ? sde_noise : StepNoise([&](int64_t) { return torch::randn_like(x0); }),
                  on_step);
  } else {
    Dopri5Options opt;
    opt.atol = s.atol;
    opt.rtol = s.rtol;
    r = solve_ode(f, x0, sampling_grid(s), s.solver, opt, on_step);
  }
  r.graphed = plain.graphed() || guided.graphed();
  model.train(was_training);
  return r;
}

}  // namespace fm
