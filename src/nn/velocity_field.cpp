#include "nn/velocity_field.h"

#include <cmath>
#include <tuple>

#include "nn/mlp.h"
#include "util/error.h"

namespace fm {

torch::Tensor timestep_embedding(const torch::Tensor& t, int64_t dim, double max_period) {
  int64_t half = dim / 2;
  auto freqs = torch::exp(-std::log(max_period) *
                          torch::arange(half, torch::TensorOptions().dtype(torch::kFloat32).device(t.device())) / half);
  auto args = t.to(torch::kFloat32).unsqueeze(1) * freqs.unsqueeze(0);
  auto emb = torch::cat({torch::cos(args), torch::sin(args)}, 1);
  if (dim % 2) emb = torch::cat({emb, torch::zeros_like(emb.narrow(1, 0, 1))}, 1);
  return emb;
}

torch::Tensor VelocityField::forward_mean(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                                          const torch::Tensor&) {
  throw std::logic_error("forward_mean: this network has no second time (model.mlp/unet.second_time)");
}

int64_t parameter_count(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

std::shared_ptr<VelocityField> make_unet_velocity(const UNetConfig& cfg, const std::vector<int64_t>& shape);

namespace {
std::shared_ptr<VelocityField> make_network(const ModelConfig& cfg, const std::vector<int64_t>& shape);
}  // namespace

TargetVelocity::TargetVelocity(std::shared_ptr<VelocityField> net, Target target, std::shared_ptr<const ProbPath> path)
    : net_(register_module("net", std::move(net))), target_(target), path_(std::move(path)) {
  std::tie(t_lo_, t_hi_) = target_time_range(target_, *path_);
}

torch::Tensor TargetVelocity::forward(const torch::Tensor& t, const torch::Tensor& x, const torch::Tensor& labels) {
  auto tc = t.clamp(t_lo_, t_hi_);
  return target_to_velocity(target_, *path_, net_->forward(tc, x, labels), x, tc);
}

std::shared_ptr<VelocityField> make_velocity_field(const ModelConfig& cfg, const PathConfig& path,
                                                   const std::vector<int64_t>& shape) {
  auto net = make_network(cfg, shape);
  if (cfg.target == Target::velocity) return net;
  return std::make_shared<TargetVelocity>(std::move(net), cfg.target, std::shared_ptr<const ProbPath>(make_path(path)));
}

std::shared_ptr<VelocityField> make_velocity_field(const ModelConfig& cfg, const std::vector<int64_t>& shape) {
  if (cfg.target != Target::velocity)
    throw InputError(std::string("model.target: a ") + name_of(cfg.target) +
                     "-predicting model needs its path to give velocities");
  return make_network(cfg, shape);
}

Conditioning conditioning_of(const ModelConfig& cfg) {
  switch (cfg.type) {
    case ModelType::mlp:
      return {};
    case ModelType::unet:
      return {cfg.unet.num_classes, cfg.unet.class_dropout};
  }
  throw std::logic_error("conditioning_of: unhandled model.type");
}

namespace {
std::shared_ptr<VelocityField> make_network(const ModelConfig& cfg, const std::vector<int64_t>& shape) {
  switch (cfg.type) {
    case ModelType::mlp:
      if (shape.size() != 1) throw InputError("model.type: mlp needs flat (2-D toy) data; use unet for images");
      return std::make_shared<MlpVelocity>(cfg.mlp, shape[0]);
    case ModelType::unet:
      if (shape.size() != 3) throw InputError("model.type: unet needs image data [C, H, W]");
      return make_unet_velocity(cfg.unet, shape);
  }
  throw std::logic_error("make_network: unhandled model.type");
}
}  // namespace

}  // namespace fm
