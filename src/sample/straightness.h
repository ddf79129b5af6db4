#pragma once
// How straight sampled trajectories are: S = integral over t in [0, 1] of E |x_t - ((1 - t) x_0 + t x_1)|^2, the mean
// squared deviation of the solved trajectory x_t (noise x_0 at t=0, sample x_1 at t=1) from the straight line between
// its own endpoints. 0 for straight paths, which one Euler step would integrate exactly.
#include <torch/torch.h>

namespace fm {

// Accumulates S while a solver runs, from the states after each accepted step (trapezoid rule over the step times),
// without keeping the trajectory: with a_t = x_t - x_0 and d = x_1 - x_0, |a_t - t d|^2 = |a_t|^2 - 2 t <a_t, d> +
// t^2 |d|^2, so it keeps integral |a_t|^2 dt and integral t a_t dt (one tensor the size of the batch) on the device.
class StraightnessMeter {
 public:
  explicit StraightnessMeter(const torch::Tensor& x0);
  void step(double t, const torch::Tensor& x);  // call with increasing t, last at t = 1
  // Per-sample S [B] (float64) once the solve has reached t = 1 at state x1.
  torch::Tensor finish(const torch::Tensor& x1) const;

 private:
  torch::Tensor x0_, a2_int_, ta_int_, prev_a_, prev_a2_;
  double prev_t_ = 0.0, t2_int_ = 0.0;
};

}  // namespace fm
