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

// The rows of a global batch that one rank trains on: the index-th of count equal, disjoint slices.
struct RowShard {
  int64_t index = 0;
  int64_t count = 1;
};

class CfmObjective {
 public:
  // Checks the combination of keys (throws InputError naming the key).
  CfmObjective(const Config& cfg, const ProbPath& path, int64_t num_classes);
  // The mean loss over the batch, a float32 scalar on the batch's device. With a shard, every random draw (noise,
  // times, coupling, label dropout) is still made for the whole global batch, so that each row gets exactly what one
  // process would give it, and only the shard's rows go through the network: the mean of the ranks' losses (and
  // gradients) is then the one-process loss (and gradient). The batch's size must be a multiple of shard.count.
  torch::Tensor loss(const Batch& batch, const Predict& predict, RowShard shard = {}) const;

 private:
  const Config& cfg_;
  const ProbPath& path_;
  Target target_;
  int64_t num_classes_;
  double t_lo_, t_hi_;
};

}  // namespace fm
