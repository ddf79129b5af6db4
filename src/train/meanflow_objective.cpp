#include "train/meanflow_objective.h"

#include <string>

#include "path/coupling.h"
#include "train/jvp.h"
#include "util/error.h"

namespace fm {

MeanFlowTimes paper_to_fm_times(const torch::Tensor& r_paper, const torch::Tensor& t_paper) {
  return {1.0 - t_paper, 1.0 - r_paper};
}

MeanFlowTimes sample_mean_flow_times(const MeanFlowConfig& c, int64_t n, const torch::TensorOptions& opts) {
  auto t = torch::sigmoid(c.t_loc + c.t_scale * torch::randn({n}, opts));
  auto r = torch::sigmoid(c.r_loc + c.r_scale * torch::randn({n}, opts));
  auto later = torch::maximum(t, r), earlier = torch::minimum(t, r);
  auto equal = torch::rand({n}, opts) < c.equal_share;
  return paper_to_fm_times(torch::where(equal, later, earlier), later);
}

torch::Tensor adaptive_weighted_mean(const torch::Tensor& err, double p, double c) {
  return ((err.detach() + c).pow(-p) * err).mean();
}

namespace {

std::string model_key(const ModelConfig& m) { return std::string("model.") + name_of(m.type) + ".second_time"; }

bool has_second_time(const ModelConfig& m) {
  switch (m.type) {
    case ModelType::mlp:
      return m.mlp.second_time;
    case ModelType::unet:
      return m.unet.second_time;
  }
  throw std::logic_error("has_second_time: unhandled model.type");
}

}  // namespace

MeanFlowObjective::MeanFlowObjective(const Config& cfg, const ProbPath& path, const Conditioning& cond)
    : path_cfg_(cfg.path), mf_(cfg.objective.meanflow), path_(path), cond_(cond) {
  if (!has_second_time(cfg.model))
    throw InputError(model_key(cfg.model) + ": objective.type meanflow trains a network of two times; set " +
                     model_key(cfg.model) + "=true");
  if (cfg.model.target != Target::velocity)
    throw InputError(std::string("model.target: objective.type meanflow trains the average velocity itself; set "
                                 "model.target=velocity (got \"") + name_of(cfg.model.target) + "\")");
  if (cfg.path.coupling == Coupling::sb)
    throw InputError("path.coupling: sb adds bridge noise that the MeanFlow identity does not model; use independent, "
                     "ot, sinkhorn or pairs with objective.type meanflow");
  if (cfg.loss.type != LossType::mse)
    throw InputError(std::string("loss.type: objective.type meanflow weighs its squared error adaptively "
                                 "(objective.meanflow.norm_p); set loss.type=mse (got \"") +
                     name_of(cfg.loss.type) + "\")");
  if (mf_.guidance_t_min > mf_.guidance_t_max)
    throw InputError("objective.meanflow.guidance_t_min: " + std::to_string(mf_.guidance_t_min) +
                     " is above guidance_t_max " + std::to_string(mf_.guidance_t_max));
  if (guided() && !(cond_.num_classes > 0 && cond_.null_label_trained()))
    throw InputError("objective.meanflow.omega: guidance (omega != 1 or kappa != 0) needs a class-conditional model "
                     "trained with label dropout (model.unet.num_classes > 0, model.unet.class_dropout > 0)");
}

torch::Tensor MeanFlowObjective::loss(const Batch&, const Predict&, RowShard) const {
  throw std::logic_error("MeanFlowObjective::loss: the MeanFlow objective needs the network's average velocity "
                         "(loss_from)");
}

MeanFlowObjective::Prediction MeanFlowObjective::predict_and_target(const PredictMean& mean, const torch::Tensor& x_t,
                                                                    const torch::Tensor& t, const torch::Tensor& r,
                                                                    const torch::Tensor& v,
                                                                    const torch::Tensor& labels) const {
  // d/dt u(x_t, t, r) along the flow: the tangent (v, 1) in (x, t), with r held.
  TensorFunction u_of = [&](const std::vector<torch::Tensor>& in) { return mean(in[1], r, in[0], labels); };
  // Forward mode in the same pass as the value (train/jvp.h): of the three ways measured on the CPU (this; the value
  // with its graph and a forward-mode pass without one; double backward) the fastest, at the most memory.
  auto j = jvp_forward(u_of, {x_t, t}, {v, torch::ones_like(t)});
  auto target = v + broadcast_time(r - t, v) * j.tangent.to(v.dtype());
  return {j.value, target.detach()};
}

torch::Tensor MeanFlowObjective::guided_velocity(const PredictMean& mean, const torch::Tensor& x_t,
                                                 const torch::Tensor& t, const torch::Tensor& v,
                                                 const torch::Tensor& labels, const torch::Tensor& dropped) const {
  torch::NoGradGuard no_grad;
  auto u_null = mean(t, t, x_t, torch::full_like(labels, cond_.num_classes)).to(v.dtype());
  auto guided = mf_.omega * v + (1.0 - mf_.omega - mf_.kappa) * u_null;
  if (mf_.kappa != 0.0) guided = guided + mf_.kappa * mean(t, t, x_t, labels).to(v.dtype());
  // The paper's interval [guidance_t_min, guidance_t_max] of its t, as fm's interval [lo.t, lo.r].
  auto opts = t.options();
  auto fm_interval = paper_to_fm_times(torch::full({}, mf_.guidance_t_min, opts),
                                       torch::full({}, mf_.guidance_t_max, opts));
  auto on = (t >= fm_interval.t) & (t <= fm_interval.r);
  if (dropped.defined()) on = on & ~dropped;
  std::vector<int64_t> rows(v.dim(), 1);
  rows[0] = -1;
  return torch::where(on.view(rows), guided, v);
}

torch::Tensor MeanFlowObjective::loss_from(const Batch& batch, const NetworkCalls& net, RowShard shard) const {
  TORCH_CHECK(net.mean, "MeanFlowObjective: the network has no average velocity (a second time)");
  const int64_t n = batch.x.size(0);
  shard.check(n);
  auto mine = [&](const torch::Tensor& v) { return shard.of(v); };
  // Every draw is made for the global batch, in a fixed order: noise, times, coupling, label dropout.
  auto x0 = starting_noise(path_cfg_, batch);
  auto times = sample_mean_flow_times(mf_, n, batch.x.options());
  auto t = path_.clamp_time(times.t), r = path_.clamp_time(times.r);
  Pairing p = couple(path_cfg_, x0, batch.x, batch.labels);
  auto ps = path_.sample(p.x0, p.x1, t);
  torch::Tensor labels = p.labels, dropped;
  if (labels.defined() && cond_.num_classes > 0 && cond_.class_dropout > 0) {
    dropped = torch::rand({n}, batch.x.options()) < cond_.class_dropout;
    labels = torch::where(dropped, torch::full_like(labels, cond_.num_classes), labels);
  }
  auto v = mine(ps.u_t);
  if (guided()) v = guided_velocity(net.mean, mine(ps.x_t), mine(t), v, mine(p.labels), mine(dropped));
  auto pr = predict_and_target(net.mean, mine(ps.x_t), mine(t), mine(r), v, mine(labels));
  auto err = (pr.u.to(torch::kFloat32) - pr.target.to(torch::kFloat32)).pow(2).flatten(1).sum(1);
  return adaptive_weighted_mean(err, mf_.norm_p, mf_.norm_c);
}

}  // namespace fm
