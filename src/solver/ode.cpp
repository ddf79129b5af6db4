#include "solver/ode.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace fm {

bool is_fixed_step(Solver s) { return s != Solver::dopri5; }

std::vector<double> uniform_grid(double t0, double t1, int64_t steps) {
  std::vector<double> g(steps + 1);
  for (int64_t i = 0; i <= steps; ++i) g[i] = t0 + (t1 - t0) * static_cast<double>(i) / static_cast<double>(steps);
  g.back() = t1;
  return g;
}

std::vector<double> edm_grid(int64_t steps, double rho, double sigma_min, double sigma_max) {
  std::vector<double> g(steps + 1);
  double a = std::pow(sigma_max, 1.0 / rho), b = std::pow(sigma_min, 1.0 / rho);
  for (int64_t i = 0; i <= steps; ++i) {
    double frac = steps == 0 ? 0.0 : static_cast<double>(i) / static_cast<double>(steps);
    double sigma = std::pow(a + frac * (b - a), rho);
    g[i] = 1.0 - sigma / (1.0 + sigma);
  }
  g.front() = 0.0;
  g.back() = 1.0;
  return g;
}

namespace {

// One step of size h from (t, x); adds its function evaluations to nfe.
torch::Tensor fixed_step(Solver method, const OdeFunc& f, double t, double h, const torch::Tensor& x, int64_t& nfe) {
  switch (method) {
    case Solver::euler:
      nfe += 1;
      return x + h * f(t, x);
    case Solver::midpoint: {
      nfe += 2;
      auto k1 = f(t, x);
      return x + h * f(t + 0.5 * h, x + (0.5 * h) * k1);
    }
    case Solver::heun: {
      nfe += 2;
      auto k1 = f(t, x);
      auto k2 = f(t + h, x + h * k1);
      return x + (0.5 * h) * (k1 + k2);
    }
    case Solver::rk4: {
      nfe += 4;
      auto k1 = f(t, x);
      auto k2 = f(t + 0.5 * h, x + (0.5 * h) * k1);
      auto k3 = f(t + 0.5 * h, x + (0.5 * h) * k2);
      auto k4 = f(t + h, x + h * k3);
      return x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4);
    }
    case Solver::dopri5:
    case Solver::euler_maruyama:  // an SDE solver (solver/sde.h), with a noise source the ODE solvers do not take
      break;
    case Solver::meanflow:
      // A step of a network's average velocity (solver/mean_flow.h), which no (t, x) -> dx/dt callable gives.
      throw InputError("solver meanflow: steps by a network's average velocity (a model trained with "
                       "objective.type meanflow), not by an ODE's velocity");
  }
  throw std::logic_error(std::string("solve_fixed: ") + name_of(method) + " is not a fixed-step ODE method");
}

}  // namespace

OdeResult solve_fixed(const OdeFunc& f, const torch::Tensor& x0, const std::vector<double>& grid, Solver method,
                      const StepCallback& on_step) {
  if (grid.size() < 2) throw InputError("solver: a time grid needs at least 2 points");
  OdeResult r;
  torch::Tensor x = x0;
  for (size_t i = 0; i + 1 < grid.size(); ++i) {
    const double t = grid[i], h = grid[i + 1] - grid[i];
    x = fixed_step(method, f, t, h, x, r.nfe);
    r.accepted += 1;
    if (on_step) on_step(grid[i + 1], x);
  }
  r.x = x;
  return r;
}

namespace {

double rms(const torch::Tensor& x) { return x.to(torch::kFloat64).pow(2).mean().sqrt().item<double>(); }

// Dormand-Prince 5(4) tableau.
constexpr double C2 = 1.0 / 5, C3 = 3.0 / 10, C4 = 4.0 / 5, C5 = 8.0 / 9;
constexpr double A21 = 1.0 / 5;
constexpr double A31 = 3.0 / 40, A32 = 9.0 / 40;
constexpr double A41 = 44.0 / 45, A42 = -56.0 / 15, A43 = 32.0 / 9;
constexpr double A51 = 19372.0 / 6561, A52 = -25360.0 / 2187, A53 = 64448.0 / 6561, A54 = -212.0 / 729;
constexpr double A61 = 9017.0 / 3168, A62 = -355.0 / 33, A63 = 46732.0 / 5247, A64 = 49.0 / 176,
                 A65 = -5103.0 / 18656;
constexpr double B1 = 35.0 / 384, B3 = 500.0 / 1113, B4 = 125.0 / 192, B5 = -2187.0 / 6784, B6 = 11.0 / 84;
// Fifth- minus fourth-order weights (the embedded error estimate).
constexpr double E1 = 71.0 / 57600, E3 = -71.0 / 16695, E4 = 71.0 / 1920, E5 = -17253.0 / 339200, E6 = 22.0 / 525,
                 E7 = -1.0 / 40;

}  // namespace

OdeResult solve_dopri5(const OdeFunc& f, const torch::Tensor& x0, double t0, double t1, const Dopri5Options& opt,
                       const StepCallback& on_step) {
  OdeResult r;
  r.x = x0;
  if (t1 == t0) return r;
  const double dir = t1 > t0 ? 1.0 : -1.0;
  torch::Tensor y = x0;
  double t = t0;
  torch::Tensor k1 = f(t, y);
  r.nfe = 1;

  double h = opt.first_step;
  if (h <= 0.0) {
    // Hairer, Norsett & Wanner's starting step, as torchdiffeq's _select_initial_step (order 4 for dopri5).
    auto scale = opt.atol + opt.rtol * y.abs();
    double d0 = rms(y / scale), d1 = rms(k1 / scale);
    double h0 = (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1;
    auto f1 = f(t + dir * h0, y + (dir * h0) * k1);
    r.nfe += 1;
    double d2 = rms((f1 - k1) / scale) / h0;
    double h1 = (d1 <= 1e-15 && d2 <= 1e-15) ? std::max(1e-6, h0 * 1e-3) : std::pow(0.01 / std::max(d1, d2), 1.0 / 5.0);
    h = std::min(100.0 * h0, h1);
  }

  const double span = std::fabs(t1 - t0);
  while (std::fabs(t - t0) < span) {
    if (r.accepted + r.rejected >= opt.max_steps)
      throw std::runtime_error("dopri5: exceeded " + std::to_string(opt.max_steps) + " steps (tolerance too tight?)");
    double remaining = span - std::fabs(t - t0);
    bool last = h >= remaining * (1.0 - 1e-12);
    double hs = last ? remaining : h;
    double dt = dir * hs;
    auto k2 = f(t + C2 * dt, y + dt * (A21 * k1));
    auto k3 = f(t + C3 * dt, y + dt * (A31 * k1 + A32 * k2));
    auto k4 = f(t + C4 * dt, y + dt * (A41 * k1 + A42 * k2 + A43 * k3));
    auto k5 = f(t + C5 * dt, y + dt * (A51 * k1 + A52 * k2 + A53 * k3 + A54 * k4));
    auto k6 = f(t + dt, y + dt * (A61 * k1 + A62 * k2 + A63 * k3 + A64 * k4 + A65 * k5));
    auto y1 = y + dt * (B1 * k1 + B3 * k3 + B4 * k4 + B5 * k5 + B6 * k6);
    auto k7 = f(t + dt, y1);
    r.nfe += 6;
    auto err = dt * (E1 * k1 + E3 * k3 + E4 * k4 + E5 * k5 + E6 * k6 + E7 * k7);
    auto tol = opt.atol + opt.rtol * torch::max(y.abs(), y1.abs());
    double ratio = rms(err / tol);
    if (!std::isfinite(ratio)) throw std::runtime_error("dopri5: the ODE state became non-finite at t=" + std::to_string(t));
    bool accept = ratio <= 1.0;
    if (accept) {
      t = last ? t1 : t + dt;
      y = y1;
      k1 = k7;
      r.accepted += 1;
      if (on_step) on_step(t, y);
    } else {
      r.rejected += 1;
    }
    // torchdiffeq's _optimal_step_size with safety 0.9, ifactor 10, dfactor 0.2 (1 after an accepted step).
    double factor;
    if (ratio == 0.0) {
      factor = 10.0;
    } else {
      double dfactor = ratio < 1.0 ? 1.0 : 0.2;
      factor = std::min(10.0, std::max(0.9 * std::pow(ratio, -1.0 / 5.0), dfactor));
    }
    h = hs * factor;
  }
  r.x = y;
  return r;
}

OdeResult solve_ode(const OdeFunc& f, const torch::Tensor& x0, const std::vector<double>& grid, Solver method,
                    const Dopri5Options& opt, const StepCallback& on_step) {
  if (method == Solver::dopri5) return solve_dopri5(f, x0, grid.front(), grid.back(), opt, on_step);
  return solve_fixed(f, x0, grid, method, on_step);
}

}  // namespace fm
