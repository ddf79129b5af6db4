#pragma once
// Exact likelihood of a continuous normalizing flow dx/dt = v(t, x), with noise N(0, I) at t=0 and data at t=1.
//
// The continuity equation along a trajectory gives d/dt log p_t(x_t) = -div v(t, x_t), so
//   log p_1(x_1) = log N(x_0; 0, I) - int_0^1 div v(t, x_t) dt,
// where x_0 is found by integrating the flow backwards from the data point x_1 at t=1 to t=0. We integrate the
// augmented state (x, l) with dl/dt = div v from t=1 (l=0) to t=0, so l(0) = -int_0^1 div v dt and
// log p_1(x_1) = log N(x_0; 0, I) + l(0).
//
// Pure math over a velocity callable: nothing here knows about networks, checkpoints or data files.
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "config/choices.h"

namespace fm {

// v(t, x): t is [B] (one time per sample, all equal), x is [B, ...]; returns dx/dt shaped like x. It must be
// differentiable in x with autograd (the divergence is taken by vector-Jacobian products).
using VelocityFn = std::function<torch::Tensor(const torch::Tensor& t, const torch::Tensor& x)>;

struct LikelihoodOptions {
  Divergence divergence = Divergence::hutchinson;
  double atol = 1e-5, rtol = 1e-5;       // dopri5 tolerances
};

struct LikelihoodResult {
  torch::Tensor log_p;  // [B] float64: log density of x_1 (nats) under the flow
  torch::Tensor x0;     // [B, ...]: the noise the data point flows back to at t=0
  torch::Tensor log_p0; // [B] float64: log N(x0; 0, I)
  int64_t nfe = 0;      // ODE function evaluations (each one forward and one or D backward passes)
};

// log p_1(x1) for a batch x1 [B, ...] by dopri5 from t=1 to t=0. For "hutchinson", `probe` ([B, ...], like x1) is the
// fixed probe e of the estimate div v ~ e^T (dv/dx) e (unbiased when E[e e^T] = I); it is ignored for "exact", which
// sums the Jacobian's diagonal with one backward pass per dimension (for small D: 2-D toys and tests).
LikelihoodResult log_likelihood(const VelocityFn& v, const torch::Tensor& x1, const LikelihoodOptions& opt,
                                const torch::Tensor& probe = {});

// Divergence of v at (t, x), x [B, ...]: exact, or Hutchinson's estimate with `probe`. Returns [B].
torch::Tensor divergence(const VelocityFn& v, const torch::Tensor& t, const torch::Tensor& x,
                         Divergence method, const torch::Tensor& probe = {}, torch::Tensor* v_out = nullptr);

// A Hutchinson probe shaped `shape`: rademacher (+-1 with equal probability) or gaussian (N(0, 1)); both have
// E[e e^T] = I. Drawn on the CPU from `gen`.
torch::Tensor make_probe(Probe kind, const std::vector<int64_t>& shape, at::Generator& gen);

// log N(x; 0, I) summed over all but the first dimension, in float64. Returns [B].
torch::Tensor standard_normal_log_prob(const torch::Tensor& x);

// Uniform dequantisation of 8-bit data: v uint8 in {0..255}, `uniform` U[0,1) like v. Returns y = 2 (v + U)/256 - 1 in
// [-1, 1), the scale the models are trained on.
torch::Tensor dequantize(const torch::Tensor& v, const torch::Tensor& uniform);

// Bits per dimension of the 8-bit data from log p(y) (nats, density of the dequantised y in [-1, 1)^D), D = dims.
//
// With z = v + U in [0, 256)^D and the uniform dequantiser (density 1 on the unit cube), Jensen gives
//   log P(v) = log int_{[0,1)^D} q(v + w) dw >= E_w[log q(v + w)].
// z = 256 u and u = (y + 1) / 2, so q(z) = p_u(u) / 256^D and p_u(u) = 2^D p_y(y): log q = log p_y - D ln 128.
// Hence -log2 P(v) / D <= -log p_y(y) / (D ln 2) + log2 128 = -log p_y(y) / (D ln 2) + 7.
// For the importance-weighted bound over K draws pass log p = logmeanexp_k log p_y(y_k) (see logmeanexp).
torch::Tensor bits_per_dim(const torch::Tensor& log_p_y, int64_t dims);

// log (1/K sum_k exp(a_k)) along `dim`.
torch::Tensor logmeanexp(const torch::Tensor& a, int64_t dim);

}  // namespace fm
