#pragma once
// Data-parallel gradient averaging that overlaps backward: parameters are grouped into buckets of about `bucket_mib`
// in reverse registration order (roughly the order backward produces their gradients); a hook on each parameter's
// gradient copies it into its bucket's flat buffer, and a bucket whose gradients have all arrived is summed over the
// ranks at once, asynchronously, while backward goes on with earlier layers. finish() waits for the last buckets and
// writes the average into every parameter's .grad.
//
// Why hooks and not c10d::Reducer: the Reducer is DistributedDataParallel's engine and carries its Python-side
// contract (an intrusive_ptr<ProcessGroup> wrapper, comm-hook and logger state, unused-parameter search, static-graph
// bookkeeping, rebuilding buckets after the first step); fm's models use every parameter every step, so ~150 lines
// over the World's backend give the same overlap with one rule that is easy to check: buckets launch in index order
// on every rank, so every rank issues the same collectives in the same sequence.
#include <torch/torch.h>

#include <chrono>
#include <memory>
#include <vector>

#include "dist/world.h"

namespace fm::dist {

class GradReducer {
 public:
  // `params`: the model's parameters, in the same order on every rank. Without a launcher every call is a no-op; a
  // launched job of one process still goes through its backend (an identity), which keeps that path exercised.
  GradReducer(std::vector<torch::Tensor> params, World& world, double bucket_mib = 25.0, double first_bucket_mib = 1.0);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // Before backward: the hooks collect this step's gradients.
  void prepare();
  // After backward: launches what has not been launched (gradients that never arrived count as zero), waits, and sets
  // every parameter's .grad to the average over the ranks.
  void finish();

  int64_t num_buckets() const;
  // Of the last step: seconds finish() waited for communication after backward had returned (the part of the
  // all-reduce that did not hide behind backward), and the buckets already launched when backward returned.
  double last_exposed_wait_s() const;
  int64_t last_launched_during_backward() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fm::dist
