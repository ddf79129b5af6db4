#pragma once
// Improved precision and recall (Kynkaanniemi et al. 2019, "Improved Precision and Recall Metric for Assessing
// Generative Models", section 3): each set of features stands for its manifold by the union of balls around its
// points, the ball of a point reaching its k-th nearest neighbour in the same set (k = 3 in the paper). Precision is
// the fraction of generated samples inside the real manifold, recall the fraction of real samples inside the generated
// one:
//   precision = 1/|G| sum_{g in G} [exists r in R: ||g - r|| <= ||r - NN_k(r, R)||]
//   recall    = 1/|R| sum_{r in R} [exists g in G: ||r - g|| <= ||g - NN_k(g, G)||]
// fm computes them on the 2048-d Inception pool3 features FID uses. Distances are Euclidean, computed as
// |a|^2 + |b|^2 - 2 a.b (clamped at 0) in the features' dtype and on their device, in blocks of rows, so that no
// |A| x |B| matrix is held at once (50k x 50k would be 10 GB in float32).
#include <torch/torch.h>

namespace fm {

constexpr int64_t kPrecisionRecallK = 3;

struct PrecisionRecall {
  double precision = 0, recall = 0;
  int64_t k = kPrecisionRecallK;
};

// The squared radius of each row's ball: its squared distance to its k-th nearest other row of `x` ([N, D] floating;
// the row itself is left out by index, so duplicates give radius 0). [N], x's dtype. Needs N > k. `block_rows`
// rows of distances at a time (0: as many as keep a block under 2^24 entries).
torch::Tensor knn_radii_squared(const torch::Tensor& x, int64_t k, int64_t block_rows = 0);

// Whether each row of `query` ([M, D]) lies in some ball of `x` ([N, D], squared radii [N]): bool [M].
torch::Tensor in_manifold(const torch::Tensor& query, const torch::Tensor& x, const torch::Tensor& radii_squared,
                          int64_t block_rows = 0);

// real [N, D] and generated [M, D] features, the same floating dtype and device; InputError when a set has k or fewer
// rows or the feature sizes differ.
PrecisionRecall precision_recall(const torch::Tensor& real, const torch::Tensor& generated,
                                 int64_t k = kPrecisionRecallK, int64_t block_rows = 0);

}  // namespace fm
