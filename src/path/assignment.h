#pragma once
// Optimal transport between two equally weighted point clouds of the same size n (a minibatch of noise and of data):
// the exact assignment (linear sum assignment) and the entropic plan (Sinkhorn).
#include <vector>

#include <torch/torch.h>

namespace fm {

// The permutation col[i] minimising sum_i cost[i][col[i]] for a square n x n row-major cost matrix: the shortest
// augmenting path algorithm with dual potentials (Jonker & Volgenant 1987), in the form scipy's
// linear_sum_assignment uses (Crouse 2016), O(n^3) on the host. Non-finite costs throw std::invalid_argument.
std::vector<int64_t> linear_sum_assignment(const std::vector<double>& cost, int64_t n);

// The same for a square cost tensor on any device: returns int64 [n] on that device. The matrix is copied to the
// host (one synchronisation per call; n^2 doubles, 2 MiB at n = 512), as torchcfm's OT-CFM does with POT.
torch::Tensor assignment(const torch::Tensor& cost);

// The entropic OT plan between uniform marginals: P = argmin <P, C> - reg H(P), P 1 = 1/n, P^T 1 = 1/m, by `iters`
// log-domain Sinkhorn iterations in tensor ops where the cost lives (no host copy, no synchronisation; the fixed count
// avoids a convergence check that would need one). Returns [n, m] in the cost's dtype.
torch::Tensor sinkhorn_plan(const torch::Tensor& cost, double reg, int64_t iters);

// Squared Euclidean distances between the rows of a [n, ...] and b [m, ...], flattened: [n, m].
torch::Tensor squared_distances(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace fm
