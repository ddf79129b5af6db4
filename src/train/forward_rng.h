#pragma once
// The randomness inside the network's forward pass (dropout masks) comes from a stream of its own, seeded by
// (run seed, step, rank) and restored afterwards, so that:
//  - each rank of a multi-process job draws its own masks (the same stream on every rank would give rows i and
//    B/size + i the same mask);
//  - the training stream (noise, times, coupling, label dropout), drawn for the whole global batch, moves on the same
//    way for any number of ranks, so a run resumed with another world size continues the same sequence of batches;
//  - a resume is still exact: the stream depends only on the step.
#include <torch/torch.h>

namespace fm {

class ForwardRngScope {
 public:
  ForwardRngScope(const torch::Device& device, uint64_t seed, int64_t step, int rank);
  ~ForwardRngScope();
  ForwardRngScope(const ForwardRngScope&) = delete;
  ForwardRngScope& operator=(const ForwardRngScope&) = delete;

 private:
  at::Generator gen_;
  at::Tensor saved_;
};

}  // namespace fm
