#pragma once
// A training objective: the loss of one global batch given the network. Flow matching's CFM loss is one
// (train/cfm_objective.h); an objective is one file behind this interface and one case in make_objective.
// Noise at t=0, data at t=1.
#include <functional>
#include <memory>
#include <string>

#include <torch/torch.h>

#include "config/config.h"
#include "data/batch_sampler.h"
#include "nn/velocity_field.h"
#include "path/prob_path.h"

namespace fm {

// The network's raw output for times t [B], points x [B, ...] and labels (undefined, or [B] int64).
using Predict = std::function<torch::Tensor(const torch::Tensor& t, const torch::Tensor& x, const torch::Tensor& labels)>;

// The network's raw average velocity from time t to time r (VelocityField::forward_mean), for a network with a second
// time.
using PredictMean = std::function<torch::Tensor(const torch::Tensor& t, const torch::Tensor& r, const torch::Tensor& x,
                                                const torch::Tensor& labels)>;

// What the training step lets an objective call of the network: its raw output at one time, and, for a network with
// a second time, its average velocity between two (empty otherwise).
struct NetworkCalls {
  Predict predict;
  PredictMean mean;
};

// The rows of a global batch that one rank trains on: the index-th of count equal, disjoint slices.
struct RowShard {
  int64_t index = 0;
  int64_t count = 1;
  // Throws unless a batch of n rows splits into count equal slices of which index is one.
  void check(int64_t n) const;
  // This shard's slice of a tensor whose first dimension is the global batch; an undefined tensor stays undefined.
  torch::Tensor of(const torch::Tensor& v) const;
};

// Receives the random draws an objective made for one step, by name (each objective's header lists its names), whole
// global batches before any shard is taken: what a reference implementation needs to replay the step. Training sets
// none.
using DrawSink = std::function<void(const std::string& name, const torch::Tensor& value)>;

class Objective {
 public:
  virtual ~Objective() = default;
  // The mean loss over the batch, a float32 scalar on the batch's device. With a shard, every random draw (noise,
  // times, coupling, label dropout) is still made for the whole global batch, so that each row gets exactly what one
  // process would give it, and only the shard's rows go through the network: the mean of the ranks' losses (and
  // gradients) is then the one-process loss (and gradient). The batch's size must be a multiple of shard.count.
  virtual torch::Tensor loss(const Batch& batch, const Predict& predict, RowShard shard = {}) const = 0;
  // The same loss given everything the step can call of the network. An objective of the average velocity (MeanFlow,
  // train/meanflow_objective.h) overrides it; the others are loss(batch, net.predict, shard).
  virtual torch::Tensor loss_from(const Batch& batch, const NetworkCalls& net, RowShard shard = {}) const {
    return loss(batch, net.predict, shard);
  }
  // Whether a step's loss needs host work or data-dependent sampling (a coupling that solves on the host), which a
  // CUDA graph cannot capture.
  virtual bool needs_host() const = 0;
  void record_draws(DrawSink sink) { sink_ = std::move(sink); }

 protected:
  void record(const char* name, const torch::Tensor& value) const {
    if (sink_ && value.defined()) sink_(name, value.detach());
  }

 private:
  DrawSink sink_;
};

// The noise x0 of a step's rows: the batch's own with the pairs coupling (fm reflow's pairs), else a fresh draw of
// N(0, I) for the whole global batch. Throws InputError naming path.coupling when only one of the two is pairs.
torch::Tensor starting_noise(const PathConfig& path, const Batch& batch);

// The objective `cfg` trains, on `path`, for a network conditioned as `cond`; throws InputError naming the key when
// the combination of keys is not one it can train.
std::unique_ptr<Objective> make_objective(const Config& cfg, const ProbPath& path, const Conditioning& cond);

}  // namespace fm
