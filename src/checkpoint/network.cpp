#include "checkpoint/network.h"

#include "kernels/kernels.h"

namespace fm {

std::shared_ptr<VelocityField> load_network(CheckpointReader& ck, Weights weights, const torch::Device& device) {
  auto model = make_velocity_field(ck.config().model, ck.config().path, ck.sample_shape());
  model->to(device);
  ck.load_module(weights == Weights::raw ? "model" : "ema", *model);
  if (kernels::prefers_channels_last(device, ck.sample_shape(), /*training=*/false))
    kernels::weights_to_channels_last(*model);
  return model;
}

}  // namespace fm
