#pragma once
// The network a checkpoint holds, as sample, eval-nll and export run it: built from the checkpoint's own config, its
// EMA or raw weights loaded, on the device in the memory format that device prefers for inference.
#include <memory>

#include "checkpoint/checkpoint.h"
#include "config/choices.h"
#include "nn/velocity_field.h"

namespace fm {

std::shared_ptr<VelocityField> load_network(CheckpointReader& ck, Weights weights, const torch::Device& device);

}  // namespace fm
