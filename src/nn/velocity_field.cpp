#include "nn/velocity_field.h"

#include <cmath>

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

int64_t parameter_count(const torch::nn::Module& m) {
  int64_t n = 0;
  for (const auto& p : m.parameters()) n += p.numel();
  return n;
}

std::shared_ptr<VelocityField> make_unet_velocity(const UNetConfig& cfg, const std::vector<int64_t>& shape);

std::shared_ptr<VelocityField> make_velocity_field(const ModelConfig& cfg, const std::vector<int64_t>& shape) {
  if (cfg.type == "mlp") {
    if (shape.size() != 1) throw InputError("model.type: mlp needs flat (2-D toy) data; use unet for images");
    return std::make_shared<MlpVelocity>(cfg.mlp, shape[0]);
  }
  if (shape.size() != 3) throw InputError("model.type: unet needs image data [C, H, W]");
  return make_unet_velocity(cfg.unet, shape);
}

}  // namespace fm
