#pragma once
// One training step's objective: draw noise x0, pair it with the batch's data (path.coupling), draw times, sample the
// path (plus SB's bridge noise), drop class labels for classifier-free guidance, run the network and compare its
// output with model.target's target. Noise at t=0, data at t=1.
#include <functional>

#include <torch/torch.h>

#include "config/config.h"
#include "data/batch_sampler.h"
#include "path/prob_path.h"
#include "path/target.h"

namespace fm {

// The network's raw output for times t [B], points x [B, ...] and labels (undefined, or [B] int64).
using Predict = std::function<torch::Tensor(const torch::Tensor& t, const torch::Tensor& x, const torch::Tensor& labels)>;

class CfmObjective {
 public:
  // Checks the combination of keys (throws InputError naming the key).
  CfmObjective(const Config& cfg, const ProbPath& path, int64_t num_classes);
  // The mean loss over the batch, a float32 scalar on the batch's device.
  torch::Tensor loss(const Batch& batch, const Predict& predict) const;

 private:
  const Config& cfg_;
  const ProbPath& path_;
  Target target_;
  int64_t num_classes_;
  double t_lo_, t_hi_;
};

}  // namespace fm
