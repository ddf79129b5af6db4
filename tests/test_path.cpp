#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

#include <gtest/gtest.h>

#include "io/npy.h"
#include "path/assignment.h"
#include "path/coupling.h"
#include "path/prob_path.h"
#include "test_util.h"
#include "path/target.h"
#include "test_util.h"
#include "util/error.h"

namespace {

using fm::test::f64;

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
  ln.sampler = fm::TimeSampler::logit_normal;
  ln.loc = 1.2;
  ln.scale = 1.2;
  auto s = fm::sample_times(ln, n, f64);
  auto logit = torch::log(s / (1 - s));
  EXPECT_NEAR(logit.mean().item<double>(), 1.2, 0.02);
  EXPECT_NEAR(logit.std().item<double>(), 1.2, 0.02);
}

// --- schedulers ----------------------------------------------------------------------------------------------------

namespace {

auto f32 = torch::TensorOptions().dtype(torch::kFloat32);

struct NamedPath {
  std::string name;
  std::shared_ptr<fm::ProbPath> path;
};

std::vector<NamedPath> all_paths() {
  return {{"cond_ot", std::make_shared<fm::CondOTPath>(0.0)},  {"cond_ot_smin", std::make_shared<fm::CondOTPath>(1e-2)},
          {"vp", std::make_shared<fm::VPPath>(0.1, 20.0)},     {"cosine", std::make_shared<fm::CosinePath>()},
          {"poly_3", std::make_shared<fm::PolynomialPath>(3.0)}, {"poly_0.5", std::make_shared<fm::PolynomialPath>(0.5)},
          {"linear_vp", std::make_shared<fm::LinearVPPath>()}};
}

// x_t at float32 times (the same float32 numbers the path sees), differentiated numerically.
torch::Tensor xt_at(const fm::ProbPath& p, const torch::Tensor& x0, const torch::Tensor& x1, float t) {
  return p.sample(x0, x1, torch::full({x0.size(0)}, t, f32)).x_t.to(torch::kFloat64);
}

}  // namespace

TEST(Path, EverySchedulerVelocityIsTimeDerivativeInFloat32OverAllOfItsTimes) {
  // The whole of [t_min, t_max], ends included, in float32. Near a singular end the derivative changes on the scale
  // of the distance to it, so the step shrinks with that distance; the step actually taken is the difference of the
  // float32 times, not the nominal h.
  torch::manual_seed(3);
  auto x0 = torch::randn({256, 2}, f32), x1 = torch::randn({256, 2}, f32);
  for (const auto& [name, p] : all_paths()) {
    std::vector<double> ts;
    for (int k = 0; k <= 64; ++k) ts.push_back(k / 64.0);
    for (double d : {1e-2, 1e-3, 1e-4, 3e-5}) ts.push_back(p->t_min() + d), ts.push_back(p->t_max() - d);
    for (double t_nominal : ts) {
      const float t = static_cast<float>(std::clamp(t_nominal, p->t_min(), p->t_max()));
      double dist = 1.0;  // to a singular end (one whose side of the range is narrowed)
      if (p->t_min() > 0) dist = std::min<double>(dist, t);
      if (p->t_max() < 1) dist = std::min<double>(dist, 1.0 - t);
      const double h = std::min(1e-3, dist / 8);
      torch::Tensor fd;
      if (t - 2 * h >= p->t_min() && t + 2 * h <= p->t_max()) {
        float a = static_cast<float>(t - h), b = static_cast<float>(t + h);
        fd = (xt_at(*p, x0, x1, b) - xt_at(*p, x0, x1, a)) / (double(b) - double(a));
      } else {  // second-order one-sided difference, inward
        const double dir = t - 2 * h >= p->t_min() ? -1.0 : 1.0;
        float a = static_cast<float>(t + dir * h), b = static_cast<float>(t + dir * 2 * h);
        double ha = double(a) - double(t), hb = double(b) - double(t);
        // The quadratic through (0, f0), (ha, fa), (hb, fb), differentiated at 0.
        auto f0 = xt_at(*p, x0, x1, t), fa = xt_at(*p, x0, x1, a), fb = xt_at(*p, x0, x1, b);
        fd = (fa - f0) * (hb / (ha * (hb - ha))) - (fb - f0) * (ha / (hb * (hb - ha)));
      }
      auto u = p->sample(x0, x1, torch::full({256}, t, f32)).u_t.to(torch::kFloat64);
      ASSERT_TRUE(torch::isfinite(u).all().item<bool>()) << name << " t=" << t;
      // Relative to the velocity's scale at t: float32 rounding of x_t, divided by a step of ~1e-6 next to a
      // singular end, is of that order there.
      double err = (fd - u).abs().max().item<double>() / (1 + u.abs().max().item<double>());
      EXPECT_LT(err, 1e-2) << name << " t=" << t;
    }
  }
}

TEST(Path, SchedulersMatchTheirClosedForms) {
  auto t = torch::linspace(0.0, 1.0, 11, f64).clamp(1e-5, 1 - 1e-5);
  auto close = [](const torch::Tensor& a, const torch::Tensor& b) { return torch::allclose(a, b, 1e-12, 1e-12); };
  fm::CosinePath c;
  EXPECT_TRUE(close(c.alpha(t), torch::sin(M_PI / 2 * t)));
  EXPECT_TRUE(close(c.sigma(t), torch::cos(M_PI / 2 * t)));
  EXPECT_TRUE(close(c.d_alpha(t), M_PI / 2 * torch::cos(M_PI / 2 * t)));
  EXPECT_TRUE(close(c.d_sigma(t), -M_PI / 2 * torch::sin(M_PI / 2 * t)));
  fm::PolynomialPath p(3.0);
  EXPECT_TRUE(close(p.alpha(t), t * t * t));
  EXPECT_TRUE(close(p.sigma(t), 1 - t * t * t));
  EXPECT_TRUE(close(p.d_alpha(t), 3 * t * t));
  EXPECT_TRUE(close(p.d_sigma(t), -3 * t * t));
  fm::LinearVPPath l;
  EXPECT_TRUE(close(l.alpha(t), t));
  EXPECT_TRUE(close(l.sigma(t), torch::sqrt(1 - t * t)));
  EXPECT_TRUE(close(l.d_sigma(t), -t / torch::sqrt(1 - t * t)));
  // Variance preserving: alpha^2 + sigma^2 = 1 for cosine, linear-VP and VP.
  fm::VPPath vp;
  for (const fm::ProbPath* q : std::vector<const fm::ProbPath*>{&c, &l, &vp})
    EXPECT_TRUE(torch::allclose(q->alpha(t).pow(2) + q->sigma(t).pow(2), torch::ones_like(t), 1e-12, 1e-12));
  // Noise at t=0, data at t=1.
  for (const auto& [name, q] : all_paths()) {
    if (name == "vp" || name == "cond_ot_smin") continue;  // VP: alpha_0 = e^{-T(1)/2} > 0; sigma_min > 0 at t=1
    EXPECT_NEAR(q->alpha(torch::tensor(0.0, f64)).item<double>(), 0.0, 1e-12) << name;
    EXPECT_NEAR(q->sigma(torch::tensor(0.0, f64)).item<double>(), 1.0, 1e-12) << name;
    EXPECT_NEAR(q->alpha(torch::tensor(1.0, f64)).item<double>(), 1.0, 1e-12) << name;
    EXPECT_NEAR(q->sigma(torch::tensor(1.0, f64)).item<double>(), 0.0, 1e-12) << name;
  }
  // torchcfm_vp is the cosine scheduler: torchcfm's mu_t = cos(pi t / 2) x0 + sin(pi t / 2) x1.
  fm::PathConfig pc;
  pc.type = fm::PathType::torchcfm_vp;
  auto tv = fm::make_path(pc);
  auto x0 = torch::randn({4, 3}, f64), x1 = torch::randn({4, 3}, f64), t4 = torch::rand({4}, f64);
  auto s = tv->sample(x0, x1, t4);
  auto tc = t4.unsqueeze(1);
  EXPECT_TRUE(torch::allclose(s.x_t, torch::cos(M_PI / 2 * tc) * x0 + torch::sin(M_PI / 2 * tc) * x1));
  EXPECT_TRUE(torch::allclose(s.u_t, M_PI / 2 * (torch::cos(M_PI / 2 * tc) * x1 - torch::sin(M_PI / 2 * tc) * x0)));
}

TEST(Path, EverySchedulersSampledXtHasItsMarginalMoments) {
  torch::manual_seed(4);
  const int64_t n = 100000;
  auto c = torch::full({n, 1}, -0.8, f64);
  for (const auto& [name, p] : all_paths()) {
    for (double t : {0.1, 0.5, 0.95}) {
      auto x = p->sample(torch::randn({n, 1}, f64), c, torch::full({n}, t, f64)).x_t;
      double alpha = p->alpha(torch::tensor(t, f64)).item<double>(), sigma = p->sigma(torch::tensor(t, f64)).item<double>();
      EXPECT_NEAR(x.mean().item<double>(), alpha * -0.8, 5 * sigma / std::sqrt(n)) << name << " t=" << t;
      EXPECT_NEAR(x.var().item<double>(), sigma * sigma, 5 * sigma * sigma * std::sqrt(2.0 / n)) << name << " t=" << t;
    }
  }
}

TEST(Path, VPStaysFiniteInFloat32NextToTheData) {
  // Within ~6e-7 of t=1, 1 - alpha^2 rounds to 0 in float32, which would give sigma = 0, d_sigma = -inf and a NaN
  // loss. Float32 times 1 - k 2^-24 (what torch.rand can return) must give finite x_t and u_t, and sigma_t must match
  // float64.
  fm::VPPath vp;
  auto k = torch::arange(1, 33, f64);
  auto t64 = 1.0 - k * std::pow(2.0, -24);
  auto t32 = t64.to(torch::kFloat32);
  auto x = torch::ones({32, 2}, f32);
  auto s = vp.sample(x, x, t32);
  EXPECT_TRUE(torch::isfinite(s.x_t).all().item<bool>());
  EXPECT_TRUE(torch::isfinite(s.u_t).all().item<bool>());
  EXPECT_TRUE(torch::allclose(vp.sigma(t32).to(torch::kFloat64), vp.sigma(t64), 1e-5, 0));
  // Training times are clamped into [t_min, t_max], where every coefficient is finite.
  EXPECT_LT(vp.t_max(), 1.0);
  auto tm = torch::tensor({static_cast<float>(vp.t_max()), 1.0f}, f32);
  EXPECT_TRUE(torch::isfinite(vp.d_sigma(vp.clamp_time(tm))).all().item<bool>());
}

// --- prediction targets --------------------------------------------------------------------------------------------

TEST(Path, EveryTargetConvertsToTheConditionalVelocity) {
  // The exact network output of each target (x0, x1, -x0 / sigma_t) must turn into u_t on every path, and the
  // training loss of that output is 0.
  torch::manual_seed(5);
  auto x0 = torch::randn({64, 3}, f64), x1 = torch::randn({64, 3}, f64);
  for (const auto& [name, p] : all_paths()) {
    for (auto target : {fm::Target::velocity, fm::Target::noise, fm::Target::data, fm::Target::score}) {
      auto [lo, hi] = fm::target_time_range(target, *p);
      auto t = lo + (hi - lo) * torch::rand({64}, f64);
      t[0] = lo, t[1] = hi;
      auto ps = p->sample(x0, x1, t);
      auto sigma = p->sigma(fm::broadcast_time(t, x1));
      torch::Tensor out = target == fm::Target::velocity ? ps.u_t
                          : target == fm::Target::noise  ? x0
                          : target == fm::Target::data   ? x1
                                                         : -x0 / sigma;
      auto v = fm::target_to_velocity(target, *p, out, ps.x_t, t);
      double tol = 1e-8 * (1 + ps.u_t.abs().max().item<double>()) * (target == fm::Target::velocity ? 1 : 1e3);
      EXPECT_LT((v - ps.u_t).abs().max().item<double>(), tol) << name << " target " << static_cast<int>(target);
      EXPECT_LT(fm::target_loss(target, *p, out, x0, x1, t, ps).item<double>(), 1e-20) << name;
    }
  }
  // The score target's loss is sigma_t^2-weighted denoising score matching: with out = 0 it is E|x0|^2 exactly.
  fm::VPPath vp;
  auto t = torch::rand({64}, f64) * 0.9;
  auto ps = vp.sample(x0, x1, t);
  EXPECT_NEAR(fm::target_loss(fm::Target::score, vp, torch::zeros_like(x0), x0, x1, t, ps).item<double>(),
              x0.pow(2).mean().item<double>(), 1e-12);
  EXPECT_THROW(fm::parse_choice<fm::Target>("eps", "model.target"), fm::InputError);
}

// --- couplings -----------------------------------------------------------------------------------------------------

namespace {

double assignment_cost(const torch::Tensor& c, const std::vector<int64_t>& col) {
  double s = 0;
  for (size_t i = 0; i < col.size(); ++i) s += c[i][col[i]].item<double>();
  return s;
}

std::vector<int64_t> solve(const torch::Tensor& c) {
  auto cc = c.contiguous();
  return fm::linear_sum_assignment(std::vector<double>(cc.data_ptr<double>(), cc.data_ptr<double>() + cc.numel()),
                                   c.size(0));
}

}  // namespace

TEST(Path, AssignmentIsOptimalAgainstBruteForce) {
  torch::manual_seed(6);
  for (int64_t n = 1; n <= 7; ++n) {
    for (int rep = 0; rep < 5; ++rep) {
      // Integer costs with ties, and continuous ones.
      auto c = rep % 2 ? torch::randint(0, 4, {n, n}, f64) : torch::rand({n, n}, f64);
      auto col = solve(c);
      std::vector<int64_t> perm(n);
      std::iota(perm.begin(), perm.end(), 0);
      EXPECT_TRUE(std::is_permutation(col.begin(), col.end(), perm.begin()));
      double best = 1e300;
      do best = std::min(best, assignment_cost(c, perm));
      while (std::next_permutation(perm.begin(), perm.end()));
      EXPECT_NEAR(assignment_cost(c, col), best, 1e-12) << "n=" << n;
    }
  }
  EXPECT_THROW(fm::linear_sum_assignment({0.0, NAN, 1.0, 2.0}, 2), std::invalid_argument);
}

TEST(Path, AssignmentMatchesScipy) {
  torch::manual_seed(7);
  fm::test::TempDir dir("assign");
  std::vector<std::pair<std::string, torch::Tensor>> mats;
  for (int64_t n : {2, 17, 64, 128, 200}) {
    mats.push_back({"c" + std::to_string(mats.size()), torch::rand({n, n}, f64)});
    // Squared distances of Gaussian clouds, as the OT coupling builds them.
    auto a = torch::randn({n, 8}, f64), b = torch::randn({n, 8}, f64);
    mats.push_back({"c" + std::to_string(mats.size()), fm::squared_distances(a, b)});
  }
  fm::write_npz(dir / "costs.npz", mats);
  auto r = fm::test::run_stdout(fm::test::python() + " " + fm::test::ref_script("assignment_ref.py") + " " +
                                (dir / "costs.npz"));
  ASSERT_EQ(r.code, 0) << r.output;
  std::istringstream in(r.output);
  for (const auto& [key, c] : mats) {
    double ref = 0;
    ASSERT_TRUE(in >> ref) << key;
    EXPECT_NEAR(assignment_cost(c, solve(c)), ref, 1e-9 * (1 + std::fabs(ref))) << key << " n=" << c.size(0);
    // The tensor form (float32 costs, as training passes them) finds the same optimum up to float32 rounding.
    auto col = fm::assignment(c.to(torch::kFloat32));
    ASSERT_EQ(col.dtype(), torch::kLong);
    std::vector<int64_t> cv(col.data_ptr<int64_t>(), col.data_ptr<int64_t>() + col.numel());
    EXPECT_NEAR(assignment_cost(c, cv), ref, 1e-5 * (1 + std::fabs(ref))) << key;
  }
}

TEST(Path, SinkhornPlanHasUniformMarginalsAndApproachesTheExactOptimum) {
  torch::manual_seed(8);
  const int64_t n = 48;
  auto a = torch::randn({n, 2}, f64), b = torch::randn({n, 2}, f64) + 1.0;
  auto c = fm::squared_distances(a, b);
  auto exact = assignment_cost(c, solve(c)) / n;
  double prev_cost = 1e300;
  for (double reg : {1.0, 0.3, 0.1}) {
    auto p = fm::sinkhorn_plan(c, reg, 5000);
    EXPECT_TRUE(torch::allclose(p.sum(0), torch::full({n}, 1.0 / n, f64), 1e-6, 1e-9)) << reg;
    EXPECT_TRUE(torch::allclose(p.sum(1), torch::full({n}, 1.0 / n, f64), 1e-3, 1e-7)) << reg << " " << (p.sum(1) * n - 1).abs().max().item<double>();
    // The entropic plan's transport cost falls towards the exact optimum as reg shrinks, and never below it.
    double cost = (p * c).sum().item<double>();
    std::printf("sinkhorn reg %.2f: transport cost %.5f, exact optimum %.5f\n", reg, cost, exact);
    EXPECT_GE(cost, exact - 1e-9);
    EXPECT_LT(cost, prev_cost);
    prev_cost = cost;
  }
  EXPECT_LT(prev_cost, exact * 1.1);
}

TEST(Path, CouplingsKeepLabelsWithTheirImagesAndReduceTransportCost) {
  torch::manual_seed(9);
  const int64_t n = 64;
  // Data whose label is recoverable from the image itself: label = round(x[0]).
  auto labels = torch::randint(0, 5, {n}, torch::kLong);
  auto x1 = torch::stack({labels.to(torch::kFloat32), torch::randn({n}, f32)}, 1);
  auto x0 = torch::randn({n, 2}, f32);
  auto total = [](const fm::Pairing& p) { return (p.x0 - p.x1).pow(2).sum().item<double>(); };
  fm::PathConfig cfg;
  const double independent = total({x0, x1, labels});
  for (fm::Coupling c : {fm::Coupling::independent, fm::Coupling::ot, fm::Coupling::sinkhorn, fm::Coupling::sb}) {
    cfg.coupling = c;
    cfg.ot_reg = 0.05;
    auto p = fm::couple(cfg, x0, x1, labels);
    ASSERT_EQ(p.x0.sizes(), x0.sizes()) << c;
    EXPECT_TRUE(torch::equal(p.x1.select(1, 0).round().to(torch::kLong), p.labels)) << c;
    if (c == fm::Coupling::independent) EXPECT_TRUE(torch::equal(p.x0, x0));
    if (c == fm::Coupling::ot) {
      // Data and labels keep their order, x0 is a permutation of the noise, and the pairing is the optimum.
      EXPECT_TRUE(torch::equal(p.x1, x1) && torch::equal(p.labels, labels));
      EXPECT_TRUE(torch::equal(std::get<0>(p.x0.select(1, 0).sort()), std::get<0>(x0.select(1, 0).sort())));
      auto c64 = fm::squared_distances(x0.to(torch::kFloat64), x1.to(torch::kFloat64));
      EXPECT_NEAR(total(p), assignment_cost(c64, solve(c64)), 1e-3);
    }
    if (c == fm::Coupling::ot || c == fm::Coupling::sinkhorn) EXPECT_LT(total(p), 0.6 * independent) << c;
  }
}

TEST(Path, BridgeNoiseDerivative) {
  auto t = torch::linspace(0.01, 0.99, 50, f64);
  const double h = 1e-6;
  auto n = fm::bridge_noise(0.7, t);
  auto fd = (fm::bridge_noise(0.7, t + h).std - fm::bridge_noise(0.7, t - h).std) / (2 * h);
  EXPECT_TRUE(torch::allclose(fd, n.d_std, 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(n.std, 0.7 * torch::sqrt(t * (1 - t))));
}

// --- few-step training: the U-shaped time distribution, the pseudo-Huber loss, the score of a velocity --------------

// Lee et al.'s U-shaped times, sampled in float32 as training draws them, against their closed-form CDF: the
// Kolmogorov-Smirnov statistic of 200k draws stays below the 0.1% critical value 1.95 / sqrt(n); uniform times (what
// time.sampler = uniform gives) miss it by far. a = 0 is the uniform distribution.
TEST(Path, UShapedTimesFollowTheirDensity) {
  torch::manual_seed(5);
  const int64_t n = 200000;
  auto ks = [&](const torch::Tensor& t, double a) {
    auto sorted = std::get<0>(t.to(torch::kFloat64).sort());
    auto acc = sorted.accessor<double, 1>();
    double d = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double f = fm::u_shaped_cdf(a, acc[i]);
      d = std::max({d, std::fabs(f - static_cast<double>(i) / n), std::fabs(f - static_cast<double>(i + 1) / n)});
    }
    return d;
  };
  fm::TimeConfig cfg;
  cfg.sampler = fm::TimeSampler::u_shaped;
  for (double a : {4.0, 1.0}) {
    cfg.u_shaped_a = a;
    auto t = fm::sample_times(cfg, n, f32);
    EXPECT_GE(t.min().item<double>(), 0.0);
    EXPECT_LE(t.max().item<double>(), 1.0);
    EXPECT_LT(ks(t, a), 1.95 / std::sqrt(static_cast<double>(n))) << "a = " << a;
  }
  EXPECT_GT(ks(torch::rand({n}, f64), 4.0), 0.05) << "the test tells uniform times from U-shaped ones";
  cfg.u_shaped_a = 0.0;
  EXPECT_LT(ks(fm::sample_times(cfg, n, f32), 0.0), 1.95 / std::sqrt(static_cast<double>(n)));
  // The density is the CDF's derivative, integrates to 1, is symmetric and weighs the ends e^(a/2) / 1 against the
  // middle's (cosh(a/2) / 1 at a = 4: 3.76).
  for (double t : {0.0, 0.1, 0.37, 0.5, 0.9}) {
    const double h = 1e-6, fd = (fm::u_shaped_cdf(4, t + h) - fm::u_shaped_cdf(4, t - h)) / (2 * h);
    if (t > 0) EXPECT_NEAR(fd, fm::u_shaped_pdf(4, t), 1e-6) << t;
    EXPECT_NEAR(fm::u_shaped_pdf(4, t), fm::u_shaped_pdf(4, 1 - t), 1e-12);
  }
  EXPECT_NEAR(fm::u_shaped_pdf(4, 0.0) / fm::u_shaped_pdf(4, 0.5), std::cosh(2.0), 1e-12);
  EXPECT_EQ(fm::u_shaped_cdf(4, 0.5), 0.5);
}

// The pseudo-Huber loss against its closed form written out per sample: sqrt(|r|^2 + c^2) - c over the d elements of
// each sample, divided by d, averaged over the batch, with c = 0.00054 sqrt(d) unless loss.huber_c gives it; near
// zero it is |r|^2 / (2 c d), far away |r| / d. mse stays the mean of the squares.
TEST(Path, PseudoHuberLossMatchesItsClosedForm) {
  torch::manual_seed(6);
  auto pred = torch::randn({5, 3, 4, 4}, f64), target = torch::randn({5, 3, 4, 4}, f64);
  const int64_t d = 48;
  auto expected = [&](double c, const torch::Tensor& p, const torch::Tensor& q) {
    double sum = 0;
    for (int64_t b = 0; b < 5; ++b) {
      const double sq = (p[b] - q[b]).square().sum().item<double>();
      sum += (std::sqrt(sq + c * c) - c) / d;
    }
    return sum / 5;
  };
  fm::LossConfig huber;
  huber.type = fm::LossType::pseudo_huber;
  EXPECT_DOUBLE_EQ(fm::huber_c(huber, d), 0.00054 * std::sqrt(48.0));
  EXPECT_NEAR(fm::regression_loss(huber, pred, target).item<double>(), expected(0.00054 * std::sqrt(48.0), pred, target),
              1e-12);
  huber.huber_c = 1.7;
  EXPECT_NEAR(fm::regression_loss(huber, pred, target).item<double>(), expected(1.7, pred, target), 1e-12);
  // The two regimes.
  auto small = target + 1e-4 * pred;
  const double sq = (small - target).square().sum().item<double>() / 5;  // mean |r|^2 per sample
  EXPECT_NEAR(fm::regression_loss(huber, small, target).item<double>(), sq / (2 * 1.7 * d), 1e-6 * sq / (2 * 1.7 * d));
  auto far = target + 1e4 * pred;
  const double norm = (far - target).reshape({5, -1}).norm(2, 1).mean().item<double>();
  EXPECT_NEAR(fm::regression_loss(huber, far, target).item<double>(), (norm - 1.7) / d, 1e-6 * norm / d);
  fm::LossConfig mse;
  EXPECT_NEAR(fm::regression_loss(mse, pred, target).item<double>(), (pred - target).square().mean().item<double>(),
              1e-15);
  // target_loss regresses the target's own prediction with it: for velocity, against u_t.
  fm::CondOTPath path;
  auto x0 = torch::randn({5, 3, 4, 4}, f64), x1 = torch::randn({5, 3, 4, 4}, f64), t = torch::rand({5}, f64);
  auto ps = path.sample(x0, x1, t);
  EXPECT_NEAR(fm::target_loss(fm::Target::velocity, path, pred, x0, x1, t, ps, huber).item<double>(),
              expected(1.7, pred, ps.u_t), 1e-12);
}

// x1 ~ N(m, s^2 I): x_t ~ N(alpha m, (alpha^2 s^2 + sigma^2) I), whose score is -(x - alpha m) / var, and whose
// marginal velocity is alpha' E[x1 | x] + sigma' E[x0 | x]. The score from that velocity must be the Gaussian's on
// every path, at the noise end too.
TEST(Path, ScoreFromTheVelocityIsTheMarginalsScore) {
  const double m = 0.7, s = 0.4;
  torch::manual_seed(7);
  for (const auto& [name, path] : all_paths()) {
    for (double t : {0.0, 0.05, 0.3, 0.5, 0.8, 0.97}) {
      if (t < path->t_min() || t > path->t_max()) continue;
      auto tt = torch::full({64}, t, f64);
      auto tc = tt.unsqueeze(1);
      auto a = path->alpha(tc), sg = path->sigma(tc), da = path->d_alpha(tc), ds = path->d_sigma(tc);
      auto var = a * a * s * s + sg * sg;
      auto x = a * m + torch::sqrt(var) * torch::randn({64, 2}, f64);
      auto v = da * (m + a * s * s * (x - a * m) / var) + ds * sg * (x - a * m) / var;
      auto score = fm::velocity_to_score(*path, v, x, tt);
      auto exact = -(x - a * m) / var;
      EXPECT_LT((score - exact).abs().max().item<double>(), 1e-9 * (1 + exact.abs().max().item<double>()))
          << name << " t=" << t;
    }
  }
}

// The guidance interval's noise levels in fm's time: sigma_t / alpha_t = ratio at t = 1 / (1 + ratio) on CondOT, and
// at the returned t on every path.
TEST(Path, TimeAtANoiseRatioInvertsSigmaOverAlpha) {
  fm::CondOTPath ot;
  for (double r : {0.28, 1.0, 5.42, 80.0}) EXPECT_NEAR(fm::time_at_noise_ratio(ot, r), 1.0 / (1.0 + r), 1e-12) << r;
  for (const auto& [name, path] : all_paths())
    for (double r : {0.3, 2.0}) {
      const double t = fm::time_at_noise_ratio(*path, r);
      auto tt = torch::tensor(t, f64);
      EXPECT_NEAR((path->sigma(tt) / path->alpha(tt)).item<double>(), r, 1e-9) << name;
    }
}
