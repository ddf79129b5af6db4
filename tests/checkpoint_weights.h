#pragma once
// The parameters a checkpoint holds under "model" or "ema", loaded into a network built from its own config: what the
// resume and preemption tests compare.
#include <string>
#include <vector>

#include <torch/torch.h>

#include "checkpoint/checkpoint.h"
#include "nn/velocity_field.h"

namespace fm::test {

inline std::vector<torch::Tensor> checkpoint_weights(const std::string& ckpt, const std::string& key) {
  CheckpointReader r(ckpt, torch::kCPU);
  auto m = make_velocity_field(r.config().model, r.sample_shape());
  r.load_module(key, *m);
  return m->parameters();
}

}  // namespace fm::test
