#include <cmath>

#include <gtest/gtest.h>

#include "path/prob_path.h"
#include "test_util.h"

namespace {

auto f64 = fm::test::opts(torch::kFloat64);  // on the test device

// d/dt x_t by central differences with x0 and x1 held fixed must equal the path's conditional velocity u_t.
void check_velocity_is_time_derivative(const fm::ProbPath& path) {
  torch::manual_seed(0);
  auto x0 = torch::randn({64, 3}, f64), x1 = torch::randn({64, 3}, f64);
  for (double t : {0.05, 0.3, 0.5, 0.77, 0.95}) {
    const double h = 1e-6;
    auto tt = torch::full({64}, t, f64);
    auto plus = path.sample(x0, x1, tt + h).x_t, minus = path.sample(x0, x1, tt - h).x_t;
    auto fd = (plus - minus) / (2 * h);
    auto u = path.sample(x0, x1, tt).u_t;
    EXPECT_LT((fd - u).abs().max().item<double>(), 1e-6 * (1 + u.abs().max().item<double>())) << "t=" << t;
  }
}

}  // namespace

TEST(Path, CondOTVelocityIsTimeDerivative) {
  check_velocity_is_time_derivative(fm::CondOTPath(0.0));
  check_velocity_is_time_derivative(fm::CondOTPath(1e-2));
}

TEST(Path, VPVelocityIsTimeDerivative) { check_velocity_is_time_derivative(fm::VPPath(0.1, 20.0)); }

TEST(Path, CondOTMatchesThePapersFormulas) {
  const double smin = 0.05;
  fm::CondOTPath p(smin);
  auto x0 = torch::randn({5, 2}, f64), x1 = torch::randn({5, 2}, f64);
  auto t = torch::rand({5}, f64);
  auto s = p.sample(x0, x1, t);
  auto tc = t.unsqueeze(1);
  EXPECT_TRUE(torch::allclose(s.x_t, tc * x1 + (1 - (1 - smin) * tc) * x0));
  EXPECT_TRUE(torch::allclose(s.u_t, x1 - (1 - smin) * x0));
  // Endpoints: noise at t=0, data (up to sigma_min) at t=1.
  EXPECT_TRUE(torch::allclose(p.sample(x0, x1, torch::zeros({5}, f64)).x_t, x0));
  EXPECT_TRUE(torch::allclose(p.sample(x0, x1, torch::ones({5}, f64)).x_t, x1 + smin * x0));
}

TEST(Path, SampledXtHasTheMarginalMeanAndVariance) {
  // Conditioned on x1 = c, x_t ~ N(alpha_t c, sigma_t^2): check both moments by sampling.
  torch::manual_seed(1);
  const int64_t n = 200000;
  auto c = torch::full({n, 1}, 1.7, f64);
  fm::CondOTPath ot(0.1);
  fm::VPPath vp;
  for (const fm::ProbPath* p : {static_cast<const fm::ProbPath*>(&ot), static_cast<const fm::ProbPath*>(&vp)}) {
    for (double t : {0.2, 0.6, 0.9}) {
      auto x = p->sample(torch::randn({n, 1}, f64), c, torch::full({n}, t, f64)).x_t;
      double alpha = p->alpha(torch::tensor(t, f64)).item<double>(), sigma = p->sigma(torch::tensor(t, f64)).item<double>();
      double se_mean = sigma / std::sqrt(n);
      EXPECT_NEAR(x.mean().item<double>(), alpha * 1.7, 5 * se_mean);
      EXPECT_NEAR(x.var().item<double>(), sigma * sigma, 5 * sigma * sigma * std::sqrt(2.0 / n));
    }
  }
}

TEST(Path, VPMatchesItsAlphaSigmaDefinitions) {
  const double bmin = 0.1, bmax = 20.0;
  fm::VPPath p(bmin, bmax);
  for (double t : {0.0, 0.25, 0.5, 0.9, 1.0}) {
    double s = 1 - t, T = bmin * s + 0.5 * (bmax - bmin) * s * s;
    double alpha = std::exp(-0.5 * T);
    auto tt = torch::tensor(t, f64);
    EXPECT_NEAR(p.alpha(tt).item<double>(), alpha, 1e-12);
    EXPECT_NEAR(p.sigma(tt).item<double>(), std::sqrt(1 - alpha * alpha), 1e-12);
  }
  // Data at t=1, (almost) pure noise at t=0.
  EXPECT_DOUBLE_EQ(p.alpha(torch::tensor(1.0, f64)).item<double>(), 1.0);
  EXPECT_LT(p.alpha(torch::tensor(0.0, f64)).item<double>(), 1e-2);
}

TEST(Path, TimeSamplers) {
  torch::manual_seed(2);
  const int64_t n = 200000;
  fm::TimeConfig u;
  auto t = fm::sample_times(u, n, f64);
  EXPECT_GE(t.min().item<double>(), 0.0);
  EXPECT_LT(t.max().item<double>(), 1.0);
  EXPECT_NEAR(t.mean().item<double>(), 0.5, 0.005);
  EXPECT_NEAR(t.var().item<double>(), 1.0 / 12, 0.002);
  fm::TimeConfig ln;
  ln.sampler = "logit_normal";
  ln.loc = 1.2;
  ln.scale = 1.2;
  auto s = fm::sample_times(ln, n, f64);
  auto logit = torch::log(s / (1 - s));
  EXPECT_NEAR(logit.mean().item<double>(), 1.2, 0.02);
  EXPECT_NEAR(logit.std().item<double>(), 1.2, 0.02);
}
