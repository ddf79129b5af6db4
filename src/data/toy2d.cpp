#include "data/toy2d.h"

#include <cmath>

#include "util/error.h"

namespace fm {

ToyData parse_toy(const std::string& name) {
  if (name.empty()) return ToyData::checkerboard;
  if (auto toy = choice_from<ToyData>(name)) return *toy;
  throw InputError("toy:" + name + ": unknown 2-D distribution (one of " + choice_list<ToyData>() + ")");
}

torch::Tensor sample_toy(ToyData toy, int64_t n, const torch::TensorOptions& opts_in) {
  auto opts = opts_in.dtype(torch::kFloat32);
  switch (toy) {
    case ToyData::eight_gaussians: {
      auto k = torch::randint(0, 8, {n}, opts.dtype(torch::kLong)).to(torch::kFloat32) * (2 * M_PI / 8);
      auto centers = torch::stack({torch::cos(k), torch::sin(k)}, 1) * 3.0;
      return centers + 0.2 * torch::randn({n, 2}, opts);
    }
    case ToyData::moons: {
    // Two interleaved half circles (as sklearn's make_moons), centred and scaled to about [-3.6, 3.6] x [-1.8, 1.8].
      auto upper = torch::randint(0, 2, {n, 1}, opts.dtype(torch::kLong)).to(torch::kFloat32);
      auto a = torch::rand({n, 1}, opts) * M_PI;
      auto x = upper * torch::cos(a) + (1 - upper) * (1 - torch::cos(a));
      auto y = upper * torch::sin(a) + (1 - upper) * (0.5 - torch::sin(a));
      return (torch::cat({x - 0.5, y - 0.25}, 1) * 2.4 + 0.1 * torch::randn({n, 2}, opts));
    }
    case ToyData::checkerboard: {
      // Pick a column, then a row of the same parity, then a uniform point in that unit square.
      auto col = torch::randint(0, 4, {n}, opts.dtype(torch::kLong));
      auto row = 2 * torch::randint(0, 2, {n}, opts.dtype(torch::kLong)) + (col % 2);
      auto cell = torch::stack({col, row}, 1).to(torch::kFloat32) - 2.0;
      return 2.0 * (cell + torch::rand({n, 2}, opts));
    }
    case ToyData::spirals: {
      auto r = torch::sqrt(torch::rand({n, 1}, opts)) * (3 * M_PI);
      auto sign = 2 * torch::randint(0, 2, {n, 1}, opts.dtype(torch::kLong)).to(torch::kFloat32) - 1;
      auto pts = torch::cat({-torch::cos(r) * r, torch::sin(r) * r}, 1) * sign;
      return pts / 2.5 + 0.1 * torch::randn({n, 2}, opts);
    }
  }
  throw std::logic_error("sample_toy: unhandled distribution");
}

torch::Tensor on_checkerboard(const torch::Tensor& points) {
  auto p = points.to(torch::kFloat32) / 2.0;
  auto inside = (p.abs() < 2.0).all(1);
  auto parity = torch::floor(p).sum(1).remainder(2) == 0;
  return inside & parity;
}

}  // namespace fm
