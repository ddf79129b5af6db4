#include "fid/frechet.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <spdlog/spdlog.h>

#include "util/error.h"

namespace fm {
namespace {

constexpr double kImaginaryTolerance = 1e-3;  // pytorch-fid's atol on the imaginary diagonal

// Principal square root of a symmetric covariance; refuses one whose root would be complex beyond rounding.
torch::Tensor covariance_sqrt(const torch::Tensor& sigma, const char* which) {
  auto [w, v] = torch::linalg_eigh(sigma);
  double imag = (v * v).matmul((-w).clamp_min(0).sqrt()).max().item<double>();
  if (!std::isfinite(imag)) throw c10::Error({__func__, __FILE__, __LINE__}, "non-finite eigenvalues");
  if (imag > kImaginaryTolerance) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.3g", imag);
    throw InputError(std::string("Frechet distance: ") + which +
                     " is not positive semi-definite: its square root has an imaginary diagonal part up to " + buf +
                     " (limit 1e-3, as pytorch-fid)");
  }
  return (v * w.clamp_min(0).sqrt()).matmul(v.t());
}

double trace_sqrt_product(const torch::Tensor& s1, const torch::Tensor& s2) {
  auto r1 = covariance_sqrt(s1, "sigma1");
  auto r2 = covariance_sqrt(s2, "sigma2");
  return torch::linalg_svdvals(r2.matmul(r1)).sum().item<double>();
}

}  // namespace

FrechetResult frechet_distance(const FidStats& a, const FidStats& b, double eps) {
  check_fid_stats(a, "first statistics");
  check_fid_stats(b, "second statistics");
  if (a.mu.size(0) != b.mu.size(0))
    throw InputError("Frechet distance: the statistics have different feature sizes (" +
                     std::to_string(a.mu.size(0)) + " and " + std::to_string(b.mu.size(0)) + ")");
  auto mu1 = a.mu.to(torch::kFloat64), mu2 = b.mu.to(torch::kFloat64).to(mu1.device());
  auto s1 = a.sigma.to(torch::kFloat64), s2 = b.sigma.to(torch::kFloat64).to(s1.device());
  const double mean_term = (mu1 - mu2).square().sum().item<double>();
  const double traces = s1.trace().item<double>() + s2.trace().item<double>();

  FrechetResult r;
  double tr_root = NAN;
  try {
    tr_root = trace_sqrt_product(s1, s2);
  } catch (const c10::Error&) {
    tr_root = NAN;  // a decomposition did not converge: retry with the offset below
  }
  if (!std::isfinite(tr_root)) {
    spdlog::warn("Frechet distance: square root not finite; adding {} to the diagonal of both covariances", eps);
    auto offset = eps * torch::eye(s1.size(0), s1.options());
    try {
      tr_root = trace_sqrt_product(s1 + offset, s2 + offset);
    } catch (const c10::Error& e) {
      throw std::runtime_error(std::string("Frechet distance: the covariance square root failed even with ") +
                               std::to_string(eps) + " added to the diagonal: " + e.what_without_backtrace());
    }
    if (!std::isfinite(tr_root))
      throw std::runtime_error("Frechet distance: the covariance square root is not finite even with an offset");
    r.eps_added = true;
  }
  // pytorch-fid adds the offset only inside the root, not to tr(S1) + tr(S2); so does fm.
  // A distance is >= 0; rounding leaves about -1e-13 for identical sets, which users of pytorch-fid read as a bug.
  r.distance = std::max(0.0, mean_term + traces - 2.0 * tr_root);
  return r;
}

}  // namespace fm
