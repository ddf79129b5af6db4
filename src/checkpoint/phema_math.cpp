#include "checkpoint/phema_math.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include <torch/torch.h>

namespace fm::phema {

double gamma_to_sigma_rel(double gamma) {
  return std::sqrt((gamma + 1.0) / ((gamma + 2.0) * (gamma + 2.0) * (gamma + 3.0)));
}

double sigma_rel_to_gamma(double sigma_rel) {
  if (!(sigma_rel > 0.0 && sigma_rel <= kMaxSigmaRel))
    throw std::invalid_argument("sigma_rel " + std::to_string(sigma_rel) + " is outside (0, sqrt(1/12) = 0.2887]");
  // sigma_rel(gamma) falls monotonically on gamma >= 0 from kMaxSigmaRel, and sigma_rel(gamma) < 1 / (gamma + 2), so
  // the root lies in [0, 1 / sigma_rel]: bisection down to adjacent doubles.
  double lo = 0.0, hi = 1.0 / sigma_rel;
  for (int i = 0; i < 2000; ++i) {
    const double mid = 0.5 * (lo + hi);
    if (mid <= lo || mid >= hi) break;
    (gamma_to_sigma_rel(mid) > sigma_rel ? lo : hi) = mid;
  }
  return std::abs(gamma_to_sigma_rel(lo) - sigma_rel) <= std::abs(gamma_to_sigma_rel(hi) - sigma_rel) ? lo : hi;
}

double power_ema_beta(double gamma, double t) { return std::pow(1.0 - 1.0 / t, gamma + 1.0); }

double profile_dot(const Profile& a, const Profile& b) {
  const Profile& first = a.t <= b.t ? a : b;
  const Profile& last = a.t <= b.t ? b : a;
  return (a.gamma + 1.0) * (b.gamma + 1.0) / ((a.gamma + b.gamma + 1.0) * last.t) *
         std::pow(first.t / last.t, last.gamma);
}

std::vector<double> solve_posthoc_coefficients(const std::vector<Profile>& inputs, const Profile& target) {
  const auto n = static_cast<int64_t>(inputs.size());
  if (n == 0) throw std::invalid_argument("no input profiles to reconstruct from");
  auto A = torch::empty({n, n}, torch::kFloat64);
  auto b = torch::empty({n, 1}, torch::kFloat64);
  auto a = A.accessor<double, 2>();
  auto bb = b.accessor<double, 2>();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) a[i][j] = profile_dot(inputs[i], inputs[j]);
    bb[i][0] = profile_dot(inputs[i], target);
  }
  auto [x, info] = torch::linalg_solve_ex(A, b);
  if (info.item<int64_t>() != 0 || !torch::isfinite(x).all().item<bool>())
    throw std::invalid_argument("the input profiles are linearly dependent (a profile given twice?)");
  x = x.squeeze(1);
  x = x / x.sum();
  return std::vector<double>(x.data_ptr<double>(), x.data_ptr<double>() + n);
}

}  // namespace fm::phema
