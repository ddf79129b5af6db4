#include "sample/sliced_wasserstein.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <stdexcept>

namespace fm {

namespace {

// The squared W_2 of every column pair: a [n, L] and b [m, L], each column a 1-D sample. The quantile functions are
// steps at u = i/n and j/m; between consecutive breakpoints of their union both are constant.
torch::Tensor w2_squared_columns(const torch::Tensor& a, const torch::Tensor& b) {
  const int64_t n = a.size(0), m = b.size(0);
  auto sa = std::get<0>(a.sort(0)), sb = std::get<0>(b.sort(0));
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto u = std::get<0>(torch::cat({torch::arange(1, n + 1, f64) / n, torch::arange(1, m + 1, f64) / m}).sort());
  auto widths = u - torch::cat({torch::zeros({1}, f64), u.narrow(0, 0, u.size(0) - 1)});
  // The piece ending at u_k lies in the step of a whose index is ceil(u_k n) - 1 (exact for u_k = i/n, which
  // rounding can push a hair above i/n: hence the small slack).
  auto ia = (torch::ceil(u * n - 1e-9) - 1).clamp(0, n - 1).to(torch::kLong);
  auto ib = (torch::ceil(u * m - 1e-9) - 1).clamp(0, m - 1).to(torch::kLong);
  auto diff = sa.index_select(0, ia) - sb.index_select(0, ib);
  return (diff.square() * widths.unsqueeze(1)).sum(0);
}

}  // namespace

double wasserstein_1d(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.dim() != 1 || b.dim() != 1 || a.numel() == 0 || b.numel() == 0)
    throw std::invalid_argument("wasserstein_1d: two non-empty 1-D samples");
  return std::sqrt(w2_squared_columns(a.to(torch::kFloat64).unsqueeze(1), b.to(torch::kFloat64).unsqueeze(1))
                       .item<double>());
}

double sliced_wasserstein(const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& directions) {
  if (x.dim() != 2 || y.dim() != 2 || directions.dim() != 2 || x.size(1) != y.size(1) ||
      x.size(1) != directions.size(1) || x.size(0) == 0 || y.size(0) == 0 || directions.size(0) == 0)
    throw std::invalid_argument("sliced_wasserstein: x [n, d], y [m, d] and directions [L, d], none empty");
  auto dirs = directions.to(torch::kCPU, torch::kFloat64).t();
  auto px = x.to(torch::kCPU, torch::kFloat64).matmul(dirs), py = y.to(torch::kCPU, torch::kFloat64).matmul(dirs);
  return std::sqrt(w2_squared_columns(px, py).mean().item<double>());
}

torch::Tensor random_directions(int64_t d, int64_t count, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto g = torch::randn({count, d}, gen, torch::TensorOptions().dtype(torch::kFloat64));
  return g / g.norm(2, 1, true);
}

}  // namespace fm
