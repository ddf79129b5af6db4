#include "path/assignment.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace fm {

std::vector<int64_t> linear_sum_assignment(const std::vector<double>& cost, int64_t n) {
  if (static_cast<int64_t>(cost.size()) != n * n) throw std::invalid_argument("linear_sum_assignment: cost is not n x n");
  for (double c : cost)
    if (!std::isfinite(c)) throw std::invalid_argument("linear_sum_assignment: non-finite cost");
  const double inf = std::numeric_limits<double>::infinity();
  // 1-based with a virtual column 0; u, v are the dual potentials, p[j] the row matched to column j.
  std::vector<double> u(n + 1, 0.0), v(n + 1, 0.0), minv(n + 1);
  std::vector<int64_t> p(n + 1, 0), way(n + 1, 0);
  std::vector<char> used(n + 1);
  for (int64_t i = 1; i <= n; ++i) {
    // Grow a shortest-path tree of reduced costs from row i until it reaches a free column, then augment along it.
    p[0] = i;
    int64_t j0 = 0;
    std::fill(minv.begin(), minv.end(), inf);
    std::fill(used.begin(), used.end(), 0);
    do {
      used[j0] = 1;
      const int64_t i0 = p[j0];
      const double* row = cost.data() + (i0 - 1) * n;
      double delta = inf;
      int64_t j1 = 0;
      for (int64_t j = 1; j <= n; ++j) {
        if (used[j]) continue;
        const double cur = row[j - 1] - u[i0] - v[j];
        if (cur < minv[j]) minv[j] = cur, way[j] = j0;
        if (minv[j] < delta) delta = minv[j], j1 = j;
      }
      for (int64_t j = 0; j <= n; ++j) {
        if (used[j]) {
          u[p[j]] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (p[j0] != 0);
    do {
      const int64_t j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0 != 0);
  }
  std::vector<int64_t> col(n);
  for (int64_t j = 1; j <= n; ++j) col[p[j] - 1] = j - 1;
  return col;
}

torch::Tensor assignment(const torch::Tensor& cost) {
  const int64_t n = cost.size(0);
  TORCH_CHECK(cost.dim() == 2 && cost.size(1) == n, "assignment: cost must be square");
  auto host = cost.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  std::vector<double> c(host.data_ptr<double>(), host.data_ptr<double>() + n * n);
  auto col = linear_sum_assignment(c, n);
  return torch::tensor(col, torch::kLong).to(cost.device());
}

torch::Tensor sinkhorn_plan(const torch::Tensor& cost, double reg, int64_t iters) {
  const int64_t n = cost.size(0), m = cost.size(1);
  auto k = -cost / reg;  // log of the Gibbs kernel
  const double log_a = -std::log(static_cast<double>(n)), log_b = -std::log(static_cast<double>(m));
  auto f = torch::zeros({n, 1}, cost.options()), g = torch::zeros({1, m}, cost.options());
  for (int64_t it = 0; it < iters; ++it) {
    f = log_a - torch::logsumexp(k + g, 1, true);
    g = log_b - torch::logsumexp(k + f, 0, true);
  }
  return torch::exp(k + f + g);
}

torch::Tensor squared_distances(const torch::Tensor& a, const torch::Tensor& b) {
  auto af = a.flatten(1), bf = b.flatten(1);
  // |a|^2 + |b|^2 - 2 a.b can round below 0 for near-equal rows.
  return (af.pow(2).sum(1, true) + bf.pow(2).sum(1).unsqueeze(0) - 2 * af.matmul(bf.t())).clamp_min(0);
}

}  // namespace fm
