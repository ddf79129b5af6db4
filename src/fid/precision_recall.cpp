#include "fid/precision_recall.h"

#include <algorithm>
#include <limits>
#include <string>

#include "util/error.h"

namespace fm {
namespace {

constexpr int64_t kDistanceBlockEntries = int64_t{1} << 24;

int64_t distance_block_rows(int64_t block_rows, int64_t columns) {
  return block_rows > 0 ? block_rows : std::max<int64_t>(1, kDistanceBlockEntries / std::max<int64_t>(1, columns));
}

// Squared distances between the rows of a [B, D] and of b [N, D], given |b_j|^2 as b_norms [N]: [B, N].
torch::Tensor pairwise_squared_distances(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& b_norms) {
  auto d = torch::addmm(b_norms.unsqueeze(0), a, b.t(), /*beta=*/1, /*alpha=*/-2);
  d.add_(a.square().sum(1, /*keepdim=*/true));
  return d.clamp_min_(0);
}

}  // namespace

torch::Tensor knn_radii_squared(const torch::Tensor& x, int64_t k, int64_t block_rows) {
  TORCH_CHECK(x.dim() == 2 && torch::isFloatingType(x.scalar_type()), "knn_radii_squared: expected floating [N, D], got ",
              x.scalar_type(), " ", x.sizes());
  TORCH_CHECK(k >= 1 && x.size(0) > k, "knn_radii_squared: needs more than k = ", k, " rows, got ", x.size(0));
  const int64_t n = x.size(0), rows = distance_block_rows(block_rows, n);
  const auto norms = x.square().sum(1);
  std::vector<torch::Tensor> radii;
  for (int64_t first = 0; first < n; first += rows) {
    auto block = x.slice(0, first, std::min(n, first + rows));
    auto d = pairwise_squared_distances(block, x, norms);
    d.diagonal(first).fill_(std::numeric_limits<double>::infinity());  // each row's distance to itself
    radii.push_back(std::get<0>(d.kthvalue(k, 1)));
  }
  return torch::cat(radii);
}

torch::Tensor in_manifold(const torch::Tensor& query, const torch::Tensor& x, const torch::Tensor& radii_squared,
                          int64_t block_rows) {
  TORCH_CHECK(query.dim() == 2 && x.dim() == 2 && query.size(1) == x.size(1) && radii_squared.dim() == 1 &&
                  radii_squared.size(0) == x.size(0),
              "in_manifold: expected query [M, D], x [N, D] and radii [N], got ", query.sizes(), ", ", x.sizes(), ", ",
              radii_squared.sizes());
  const int64_t m = query.size(0), rows = distance_block_rows(block_rows, x.size(0));
  const auto norms = x.square().sum(1);
  const auto radii = radii_squared.unsqueeze(0);
  std::vector<torch::Tensor> inside;
  for (int64_t first = 0; first < m; first += rows) {
    auto block = query.slice(0, first, std::min(m, first + rows));
    inside.push_back((pairwise_squared_distances(block, x, norms) <= radii).any(1));
  }
  return inside.empty() ? torch::zeros({0}, torch::TensorOptions().dtype(torch::kBool).device(x.device()))
                        : torch::cat(inside);
}

PrecisionRecall precision_recall(const torch::Tensor& real, const torch::Tensor& generated, int64_t k,
                                 int64_t block_rows) {
  auto check = [&](const torch::Tensor& f, const char* what) {
    if (f.dim() != 2 || !torch::isFloatingType(f.scalar_type()))
      throw InputError(std::string("precision and recall: ") + what + " features must be floating [N, D], got " +
                       c10::toString(f.scalar_type()) + " " + c10::str(f.sizes()));
    if (f.size(0) <= k)
      throw InputError(std::string("precision and recall: ") + what + " features: k = " + std::to_string(k) +
                       " nearest neighbours need more than " + std::to_string(k) + " rows, got " +
                       std::to_string(f.size(0)));
  };
  check(real, "real");
  check(generated, "generated");
  if (real.size(1) != generated.size(1))
    throw InputError("precision and recall: the feature sizes differ (" + std::to_string(real.size(1)) + " and " +
                     std::to_string(generated.size(1)) + ")");
  TORCH_CHECK(real.scalar_type() == generated.scalar_type() && real.device() == generated.device(),
              "precision_recall: both sets must have one dtype and device");
  PrecisionRecall r;
  r.k = k;
  auto real_radii = knn_radii_squared(real, k, block_rows);
  auto generated_radii = knn_radii_squared(generated, k, block_rows);
  r.precision = in_manifold(generated, real, real_radii, block_rows).to(torch::kFloat64).mean().item<double>();
  r.recall = in_manifold(real, generated, generated_radii, block_rows).to(torch::kFloat64).mean().item<double>();
  return r;
}

}  // namespace fm
