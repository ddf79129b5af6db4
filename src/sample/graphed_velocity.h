#pragma once
// The network's velocity for the ODE solvers, replayed as one CUDA graph per evaluation (sample.cuda_graph): the first
// evaluations of a solve run eagerly on a side stream (cuDNN chooses its algorithms, the allocator its blocks), the
// next is captured with the time and state in static device tensors, and every later one copies x in, fills t and
// replays: one launch per evaluation instead of several hundred, which is what paces a small network or batch on a
// fast GPU. It serves every solver, fixed-step and adaptive alike, since they all see only f(t, x) at one shape.
//
// Where capture is impossible (not CUDA, a LibTorch without CUDA graphs, a network that reads a value back to the
// host) every evaluation runs eagerly and one log line says why.
#include <functional>
#include <memory>

#include <torch/torch.h>

namespace fm {

class GraphedVelocity {
 public:
  // v(t, x): the velocity at times t ([B], on x's device) and states x, without gradients; `enabled` asks for the graph.
  using Velocity = std::function<torch::Tensor(const torch::Tensor& t, const torch::Tensor& x)>;
  GraphedVelocity(Velocity v, bool enabled, const torch::Device& device);
  ~GraphedVelocity();
  // A fresh tensor on every call (the solvers keep earlier evaluations).
  torch::Tensor operator()(double t, const torch::Tensor& x);
  bool graphed() const;  // true once a capture has succeeded

  static constexpr int kWarmupEvaluations = 2;

 private:
  struct Impl;
  Velocity v_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fm
