#include <cmath>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "solver/ode.h"
#include "solver/sde.h"
#include "test_util.h"

namespace {

using fm::test::f64;

// x' = cos(t) x has the exact solution x(t) = x(t0) exp(sin t - sin t0): time-dependent, so no method is exact.
fm::OdeFunc cos_growth = [](double t, const torch::Tensor& x) { return std::cos(t) * x; };
double cos_growth_exact(double x0, double t0, double t1) { return x0 * std::exp(std::sin(t1) - std::sin(t0)); }

double solve_error(fm::Solver method, int64_t steps, double t0 = 0.0, double t1 = 2.0) {
  auto x0 = torch::tensor({1.5}, f64);
  auto r = fm::solve_fixed(cos_growth, x0, fm::uniform_grid(t0, t1, steps), method);
  return std::fabs(r.x.item<double>() - cos_growth_exact(1.5, t0, t1));
}

}  // namespace

TEST(Solver, FixedStepMethodsSolveALinearSystem) {
  // x' = A x with A a rotation generator: x(t) = [cos t, -sin t; sin t, cos t] x0.
  auto A = torch::tensor({{0.0, -1.0}, {1.0, 0.0}}, f64);
  fm::OdeFunc f = [&](double, const torch::Tensor& x) { return x.matmul(A.t()); };
  auto x0 = torch::tensor({{1.0, 0.5}}, f64);
  const double T = 1.3;
  auto exact = torch::tensor({{std::cos(T) - 0.5 * std::sin(T), std::sin(T) + 0.5 * std::cos(T)}}, f64);
  const std::map<fm::Solver, double> tol = {
      {fm::Solver::euler, 2e-3}, {fm::Solver::midpoint, 1e-6}, {fm::Solver::heun, 1e-6}, {fm::Solver::rk4, 1e-12}};
  for (const auto& [m, eps] : tol) {
    auto r = fm::solve_fixed(f, x0, fm::uniform_grid(0, T, 1000), m);
    EXPECT_LT((r.x - exact).abs().max().item<double>(), eps) << m;
    const int64_t per_step = m == fm::Solver::euler ? 1 : m == fm::Solver::rk4 ? 4 : 2;
    EXPECT_EQ(r.nfe, 1000 * per_step) << m;
    EXPECT_EQ(r.accepted, 1000);
  }
}

TEST(Solver, ObservedOrderOfConvergence) {
  // Halving the step divides the global error by 2^order.
  const std::map<fm::Solver, double> order = {
      {fm::Solver::euler, 1}, {fm::Solver::midpoint, 2}, {fm::Solver::heun, 2}, {fm::Solver::rk4, 4}};
  for (const auto& [m, p] : order) {
    double e1 = solve_error(m, 40), e2 = solve_error(m, 80);
    double observed = std::log2(e1 / e2);
    EXPECT_NEAR(observed, p, 0.15) << m << " errors " << e1 << " " << e2;
  }
}

TEST(Solver, IntegratesBackwardInTime) {
  for (fm::Solver m : {fm::Solver::euler, fm::Solver::midpoint, fm::Solver::heun, fm::Solver::rk4}) {
    auto x1 = torch::tensor({2.0}, f64);
    auto r = fm::solve_fixed(cos_growth, x1, fm::uniform_grid(2.0, 0.0, 400), m);
    EXPECT_NEAR(r.x.item<double>(), cos_growth_exact(2.0, 2.0, 0.0), 1e-2) << m;
  }
  auto r = fm::solve_dopri5(cos_growth, torch::tensor({2.0}, f64), 2.0, 0.0, {});
  EXPECT_NEAR(r.x.item<double>(), cos_growth_exact(2.0, 2.0, 0.0), 1e-4);
}

TEST(Solver, Dopri5MeetsItsToleranceAndCountsNfe) {
  double prev_err = 1.0;
  int64_t prev_nfe = 0;
  for (double tol : {1e-3, 1e-5, 1e-7, 1e-9}) {
    fm::Dopri5Options o;
    o.atol = o.rtol = tol;
    auto r = fm::solve_dopri5(cos_growth, torch::tensor({1.5}, f64), 0.0, 6.0, o);
    double err = std::fabs(r.x.item<double>() - cos_growth_exact(1.5, 0.0, 6.0));
    // Local error control keeps the global error within a small multiple of the tolerance times |x|.
    EXPECT_LT(err, 20 * tol * 3.0) << "tol " << tol;
    EXPECT_LT(err, prev_err);
    // One evaluation at t0, one for the initial step size, then six per attempted step (FSAL).
    EXPECT_EQ(r.nfe, 2 + 6 * (r.accepted + r.rejected));
    EXPECT_GT(r.nfe, prev_nfe) << "tighter tolerance needs more evaluations";
    prev_err = err;
    prev_nfe = r.nfe;
  }
}

TEST(Solver, Dopri5AgreesWithTorchdiffeq) {
  const double tol = 1e-6;
  auto out = fm::test::run(fm::test::python() + " " + fm::test::ref_script("dopri5_ref.py") + " 1e-6 1e-6");
  ASSERT_EQ(out.code, 0) << out.output;
  auto ref = nlohmann::json::parse(out.output);
  fm::OdeFunc f = [](double t, const torch::Tensor& y) {
    auto x = y.select(1, 0), v = y.select(1, 1);
    return torch::stack({v, (1 - x * x) * v - x + 0.3 * std::cos(t)}, 1);
  };
  fm::Dopri5Options o;
  o.atol = o.rtol = tol;
  auto r = fm::solve_dopri5(f, torch::tensor({{2.0, 0.0}, {0.5, -1.0}}, f64), 0.0, 3.0, o);
  auto y = r.x.flatten();
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(y[i].item<double>(), ref["y"][i].get<double>(), 2e-5) << i;
  // The same controller takes the same steps; torchdiffeq may need one step more to pass t1 and interpolate back.
  EXPECT_NEAR(static_cast<double>(r.nfe), ref["nfe"].get<double>(), 12.0);
}

TEST(Solver, EdmGridRunsFromNoiseToData) {
  auto g = fm::edm_grid(10);
  ASSERT_EQ(g.size(), 11u);
  EXPECT_EQ(g.front(), 0.0);
  EXPECT_EQ(g.back(), 1.0);
  for (size_t i = 1; i < g.size(); ++i) EXPECT_GT(g[i], g[i - 1]);
  // Interior points follow sigma_i = (80^(1/7) + i/10 (0.002^(1/7) - 80^(1/7)))^7, t = 1 - sigma / (1 + sigma).
  double a = std::pow(80.0, 1 / 7.0), b = std::pow(0.002, 1 / 7.0), s = std::pow(a + 0.5 * (b - a), 7.0);
  EXPECT_NEAR(g[5], 1 - s / (1 + s), 1e-12);
}

// --- Euler-Maruyama ------------------------------------------------------------------------------------------------

// Without diffusion it is Euler's method, bit for bit; without drift it sums the scaled noise it is given; the final
// noise-free step is one more drift evaluation. NFE counts drift evaluations, and the callback sees every step.
TEST(Solver, EulerMaruyamaStepsAreEulerPlusScaledNoise) {
  auto x0 = torch::tensor({{1.5, -0.5}}, f64);
  const auto grid = fm::uniform_grid(0.0, 0.9, 9);
  std::vector<torch::Tensor> z;
  torch::manual_seed(3);
  for (int k = 0; k < 9; ++k) z.push_back(torch::randn({1, 2}, f64));
  fm::StepNoise noise = [&](int64_t k) { return z.at(k); };
  auto em = fm::solve_euler_maruyama(cos_growth, [](double) { return 0.0; }, noise, x0, grid);
  auto euler = fm::solve_fixed(cos_growth, x0, grid, fm::Solver::euler);
  EXPECT_TRUE(torch::equal(em.x, euler.x));
  EXPECT_EQ(em.nfe, 9);

  fm::OdeFunc still = [](double, const torch::Tensor& x) { return torch::zeros_like(x); };
  int calls = 0;
  auto walk = fm::solve_euler_maruyama(still, [](double t) { return 2.0 + t; }, noise, x0, grid, 0.1,
                                       [&](double, const torch::Tensor&) { ++calls; });
  auto expect = x0.clone();
  for (int k = 0; k < 9; ++k) expect += (2.0 + grid[k]) * std::sqrt(0.1) * z[k];
  EXPECT_LT((walk.x - expect).abs().max().item<double>(), 1e-12);
  EXPECT_EQ(walk.nfe, 10) << "9 stochastic steps and the final one";
  EXPECT_EQ(calls, 10);
  // The final step follows the drift without noise: x' = 1 for 0.1 adds 0.1.
  fm::OdeFunc one = [](double, const torch::Tensor& x) { return torch::ones_like(x); };
  auto last = fm::solve_euler_maruyama(one, [](double) { return 0.0; }, noise, x0, grid, 0.1);
  EXPECT_LT((last.x - (x0 + 1.0)).abs().max().item<double>(), 1e-12);
}

// The Ornstein-Uhlenbeck process dx = -theta x dt + g dW from x = 1: at time T its mean is e^(-theta T) and its
// variance g^2 (1 - e^(-2 theta T)) / (2 theta). 20000 paths of 400 steps match both within a few standard errors
// (the O(h) bias of the scheme is below 1e-3 here).
TEST(Solver, EulerMaruyamaHasTheOrnsteinUhlenbeckMarginal) {
  const double theta = 1.5, g = 0.8, T = 1.0;
  const int64_t n = 20000;
  torch::manual_seed(4);
  fm::OdeFunc drift = [&](double, const torch::Tensor& x) { return -theta * x; };
  fm::StepNoise noise = [&](int64_t) { return torch::randn({n}, f64); };
  auto r = fm::solve_euler_maruyama(drift, [&](double) { return g; }, noise, torch::ones({n}, f64),
                                    fm::uniform_grid(0.0, T, 400));
  const double mean = std::exp(-theta * T), var = g * g * (1 - std::exp(-2 * theta * T)) / (2 * theta);
  EXPECT_NEAR(r.x.mean().item<double>(), mean, 4 * std::sqrt(var / n) + 1e-3);
  EXPECT_NEAR(r.x.var().item<double>(), var, 4 * var * std::sqrt(2.0 / n) + 1e-3);
}
