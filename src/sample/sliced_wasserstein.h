#pragma once
// The sliced Wasserstein-2 distance between two point clouds (Rabin et al. 2011; Bonneel et al. 2015):
//   SW_2(x, y) = sqrt( mean over directions theta of W_2^2(theta . x, theta . y) ),
// the 1-D W_2 of the projections computed exactly between the two empirical measures, whatever their sizes:
// W_2^2 = integral over u in (0, 1) of (F^-1(u) - G^-1(u))^2 with F^-1, G^-1 the step quantile functions.
#include <cstdint>

#include <torch/torch.h>

namespace fm {

// x: [n, d], y: [m, d], directions: [L, d] unit vectors. Computed in float64.
double sliced_wasserstein(const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& directions);

// W_2 between the empirical measures of two 1-D samples [n] and [m].
double wasserstein_1d(const torch::Tensor& a, const torch::Tensor& b);

// L directions drawn uniformly on the unit sphere in d dimensions from a CPU generator seeded by `seed`.
torch::Tensor random_directions(int64_t d, int64_t count, uint64_t seed);

}  // namespace fm
