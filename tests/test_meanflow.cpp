// MeanFlow (src/train/meanflow_objective.*, src/train/jvp.*, src/solver/mean_flow.*, the second time of src/nn/): the
// translation of the paper's times, its (r, t) sampler and adaptive weight against closed forms; the Jacobian-vector
// product through the U-Net against finite differences and against the other method, in float64 and through fm's
// float32 CPU kernels; the MeanFlow target against the exact average velocity of a Gaussian-to-Gaussian flow; the
// one- and few-step sampler; training, sampling and evaluation end to end on tiny problems.
#include <cmath>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "checkpoint/checkpoint.h"
#include "config/config.h"
#include "data/toy2d.h"
#include "fid/inception.h"
#include "io/npy.h"
#include "kernels/kernels.h"
#include "nn/mlp.h"
#include "nn/unet.h"
#include "sample/generate.h"
#include "solver/mean_flow.h"
#include "test_util.h"
#include "train/jvp.h"
#include "train/meanflow_objective.h"
#include "train/trainer.h"
#include "util/error.h"

// A namespace of its own: the tests are compiled in unity batches, where helpers of the same name in other files'
// anonymous namespaces would clash.
namespace fm::meanflow_test {
namespace {

using fm::test::f64;
using fm::test::opts;
using fm::test::TempDir;

// ---- times, sampler, weight ---------------------------------------------------------------------------------------

TEST(MeanFlowTimes, PaperPairsBecomeFmPairsWithTheStepUnchanged) {
  // The paper's (r, t) = (0.2, 0.7), data at 0: fm's t = 0.3 (where x lies) and r = 0.8 (where the step lands).
  auto fm_times = paper_to_fm_times(torch::tensor({0.2}, f64), torch::tensor({0.7}, f64));
  EXPECT_NEAR(fm_times.t.item<double>(), 0.3, 1e-15);
  EXPECT_NEAR(fm_times.r.item<double>(), 0.8, 1e-15);
  // The paper's step z_r = z_t - (t - r) u_paper is fm's x_r = x_t + (r - t) u with u = -u_paper.
  const double z = 1.5, u_paper = -0.4;
  EXPECT_NEAR(z - (0.7 - 0.2) * u_paper, z + (fm_times.r - fm_times.t).item<double>() * -u_paper, 1e-15);
}

double normal_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

TEST(MeanFlowTimes, SamplerHasThePapersDistribution) {
  // t_paper = max and r_paper = min of two logit-normals (r = t on a share of rows): in fm's times t = 1 - t_paper,
  // r = 1 - r_paper. Distinct parameters for t and r, so that a swap would show.
  MeanFlowConfig c;
  c.t_loc = 0.5, c.t_scale = 1.0, c.r_loc = -1.0, c.r_scale = 1.5, c.equal_share = 0.3;
  torch::manual_seed(1);
  const int64_t n = 400000;
  auto s = sample_mean_flow_times(c, n, f64);
  EXPECT_TRUE((s.t <= s.r).all().item<bool>());
  EXPECT_TRUE(((s.t >= 0) & (s.r <= 1)).all().item<bool>());
  const double equal = (s.t == s.r).to(torch::kFloat64).mean().item<double>();
  EXPECT_NEAR(equal, c.equal_share, 4 * std::sqrt(c.equal_share * (1 - c.equal_share) / n));
  auto t_paper = 1 - s.t, r_paper = 1 - s.r;
  for (double x : {0.1, 0.3, 0.5, 0.7, 0.9}) {
    const double ft = normal_cdf((std::log(x / (1 - x)) - c.t_loc) / c.t_scale);
    const double fr = normal_cdf((std::log(x / (1 - x)) - c.r_loc) / c.r_scale);
    const double max_cdf = ft * fr, min_cdf = 1 - (1 - ft) * (1 - fr);
    const double r_cdf = (1 - c.equal_share) * min_cdf + c.equal_share * max_cdf;
    const double tol = 5 * 0.5 / std::sqrt(static_cast<double>(n));
    EXPECT_NEAR((t_paper <= x).to(torch::kFloat64).mean().item<double>(), max_cdf, tol) << "t at " << x;
    EXPECT_NEAR((r_paper <= x).to(torch::kFloat64).mean().item<double>(), r_cdf, tol) << "r at " << x;
  }
}

TEST(MeanFlowLoss, AdaptiveWeightIsAStopGradientPower) {
  auto err = torch::tensor({0.0, 0.5, 2.0, 10.0}, f64).requires_grad_(true);
  const double p = 0.75, c = 1e-3;
  auto loss = adaptive_weighted_mean(err, p, c);
  double expect = 0;
  for (double e : {0.0, 0.5, 2.0, 10.0}) expect += e / std::pow(e + c, p) / 4;
  EXPECT_NEAR(loss.item<double>(), expect, 1e-14);
  loss.backward();
  // The weight is a constant: d loss / d err_i = w_i / B.
  for (int64_t i = 0; i < 4; ++i) {
    const double e = err[i].item<double>();
    EXPECT_NEAR(err.grad()[i].item<double>(), std::pow(e + c, -p) / 4, 1e-12) << i;
  }
  // p = 0 is the plain mean squared error.
  EXPECT_NEAR(adaptive_weighted_mean(err.detach(), 0.0, c).item<double>(), 12.5 / 4, 1e-14);
}

// ---- the network of two times -------------------------------------------------------------------------------------

UNetConfig mean_unet() {
  auto c = fm::test::tiny_unet({1, 2});
  c.attention_resolutions = {4};
  c.num_classes = 3;
  c.second_time = true;
  return c;
}

void perturb_zeros(torch::nn::Module& m) {
  torch::NoGradGuard g;
  for (auto& p : m.parameters())
    if (p.abs().max().item<float>() == 0.0f) p.normal_(0.0, 0.05);
}

// The U-Net of two times on 8x8 images, its zero-initialised layers perturbed so that every part of it shows.
std::shared_ptr<VelocityField> perturbed_unet(torch::Dtype dtype) {
  torch::manual_seed(0);
  auto net = make_unet_velocity(mean_unet(), {3, 8, 8});
  perturb_zeros(*net);
  net->to(fm::test::device(), dtype);
  return net;
}

TEST(MeanFlowNet, SecondTimeAddsOnlyTheIntervalEmbedding) {
  auto cfg = mean_unet();
  cfg.second_time = false;
  auto plain = make_unet_velocity(cfg, {3, 8, 8});
  auto two = make_unet_velocity(mean_unet(), {3, 8, 8});
  EXPECT_FALSE(plain->has_second_time());
  EXPECT_TRUE(two->has_second_time());
  std::vector<std::string> a, b;
  for (const auto& p : plain->named_parameters()) a.push_back(p.key());
  for (const auto& p : two->named_parameters()) b.push_back(p.key());
  // The parameters of the plain network, in its order, then the interval's MLP.
  std::vector<std::string> extra;
  for (const auto& k : b)
    if (std::find(a.begin(), a.end(), k) == a.end()) extra.push_back(k);
  EXPECT_EQ(extra, (std::vector<std::string>{"interval_fc1.weight", "interval_fc1.bias", "interval_fc2.weight",
                                             "interval_fc2.bias"}));
  EXPECT_THROW(plain->forward_mean(torch::zeros({1}), torch::ones({1}), torch::zeros({1, 3, 8, 8}), {}),
               std::logic_error);
}

TEST(MeanFlowNet, ForwardIsTheAverageOverAZeroIntervalAndTheIntervalMatters) {
  auto unet = perturbed_unet(torch::kFloat32);
  MlpConfig mc;
  mc.hidden = 32, mc.depth = 2, mc.time_features = 8, mc.second_time = true;
  torch::manual_seed(0);
  auto mlp = std::make_shared<MlpVelocity>(mc, 2);
  mlp->to(fm::test::device());
  struct Case {
    std::shared_ptr<VelocityField> net;
    torch::Tensor x, labels;
  };
  for (const auto& c : {Case{unet, torch::randn({2, 3, 8, 8}, opts()), torch::tensor({0, 3}, opts(torch::kLong))},
                        Case{mlp, torch::randn({2, 2}, opts()), {}}}) {
    auto t = torch::tensor({0.2, 0.6}, opts()), r = torch::tensor({0.7, 0.9}, opts());
    EXPECT_TRUE(torch::equal(c.net->forward(t, c.x, c.labels), c.net->forward_mean(t, t, c.x, c.labels)));
    EXPECT_GT((c.net->forward_mean(t, r, c.x, c.labels) - c.net->forward(t, c.x, c.labels)).abs().max().item<float>(),
              1e-4);
  }
}

// ---- the Jacobian-vector product ----------------------------------------------------------------------------------

struct JvpCase {
  std::shared_ptr<VelocityField> net;
  torch::Tensor x, t, r, v, labels;
  TensorFunction f;  // (x, t) -> u(x, t, r)
};

JvpCase jvp_case(torch::Dtype dtype, bool channels_last) {
  JvpCase c;
  c.net = perturbed_unet(dtype);
  if (channels_last) kernels::weights_to_channels_last(*c.net);
  auto o = opts(dtype);
  torch::manual_seed(5);
  c.x = torch::randn({2, 3, 8, 8}, f64).to(dtype);  // drawn in float64 for both dtypes: the same numbers
  c.v = torch::randn({2, 3, 8, 8}, f64).to(dtype);
  if (channels_last) c.x = c.x.contiguous(at::MemoryFormat::ChannelsLast);
  c.t = torch::tensor({0.3, 0.55}, o);
  c.r = torch::tensor({0.8, 0.55}, o);
  c.labels = torch::tensor({1, 3}, opts(torch::kLong));
  c.f = [net = c.net, r = c.r, labels = c.labels](const std::vector<torch::Tensor>& in) {
    return net->forward_mean(in[1], r, in[0], labels);
  };
  return c;
}

double max_abs(const torch::Tensor& a) { return a.abs().max().item<double>(); }

TEST(MeanFlowJvp, ForwardModeMatchesFiniteDifferencesAndDoubleBackwardOnTheUNet) {
  auto c = jvp_case(torch::kFloat64, /*channels_last=*/false);
  auto ones = torch::ones_like(c.t);
  auto fw = jvp_forward(c.f, {c.x, c.t}, {c.v, ones});
  auto db = jvp_double_backward(c.f, {c.x, c.t}, {c.v, ones});
  const double scale = 1 + max_abs(fw.tangent);
  EXPECT_GT(max_abs(fw.tangent), 1e-2);
  EXPECT_TRUE(torch::allclose(fw.value, c.f({c.x, c.t}), 1e-12, 1e-12));
  EXPECT_LT(max_abs(db.tangent - fw.tangent), 1e-6 * scale);
  // Central differences along v: error O(e^2) from the third derivative, O(1e-16 / e) from rounding.
  const double e = 1e-5;
  auto in_x = jvp_forward(c.f, {c.x, c.t}, {c.v, torch::zeros_like(c.t)}).tangent;
  auto fd_x = (c.f({c.x + e * c.v, c.t}) - c.f({c.x - e * c.v, c.t})) / (2 * e);
  EXPECT_LT(max_abs(in_x - fd_x), 1e-6 * scale);
  // Along t: t enters its sinusoidal embedding in float32 (as torchcfm's U-Net feeds it), so a difference quotient in
  // t carries float32's rounding of t (6e-8) over the step: a longer step, and a tolerance of that rounding.
  const double et = 1e-3;
  auto in_t = jvp_forward(c.f, {c.x, c.t}, {torch::zeros_like(c.x), torch::ones_like(c.t)}).tangent;
  auto fd_t = (c.f({c.x, c.t + et}) - c.f({c.x, c.t - et})) / (2 * et);
  EXPECT_LT(max_abs(in_t - fd_t), 1e-3 * scale);
  EXPECT_LT(max_abs(in_x + in_t - fw.tangent), 1e-10 * scale);  // linear in the tangent
  EXPECT_TRUE(torch::allclose(db.value, fw.value, 1e-12, 1e-12));
}

TEST(MeanFlowJvp, ThroughFmsFloat32KernelsBothMethodsMatchFloat64) {
  // In training (grad mode on, weights that need gradients) on channels-last float32 the door would run fm's Winograd
  // convolutions and fused GroupNorm, which have neither a forward-mode derivative nor a double backward: the door
  // must route both to LibTorch's ops, and the results must match float64.
  auto ref = jvp_case(torch::kFloat64, false);
  auto c = jvp_case(torch::kFloat32, kernels::prefers_channels_last(torch::kCPU, {3, 8, 8}, true));
  c.net->train();
  auto ones = torch::ones_like(c.t);
  auto want = jvp_forward(ref.f, {ref.x, ref.t}, {ref.v, torch::ones_like(ref.t)}).tangent;
  const double tol = 1e-4 * (1 + max_abs(want));
  auto fw = jvp_forward(c.f, {c.x, c.t}, {c.v, ones});
  EXPECT_LT(max_abs(fw.tangent.to(torch::kFloat64) - want), tol);
  auto db = jvp_double_backward(c.f, {c.x, c.t}, {c.v, ones});
  EXPECT_LT(max_abs(db.tangent.to(torch::kFloat64) - want), tol);
  // The value keeps its graph to the weights, for the loss's backward.
  EXPECT_TRUE(fw.value.requires_grad());
  EXPECT_TRUE(db.value.requires_grad());
}

// ---- the target against a closed form -----------------------------------------------------------------------------

// x0 ~ N(0, I) at t = 0, x1 ~ N(m, s^2 I) at t = 1, the CondOT path x_t = t x1 + (1 - t) x0 with independent pairs.
// The marginal p_t is N(t m, sigma_t^2 I), sigma_t^2 = t^2 s^2 + (1 - t)^2; its velocity E[x1 - x0 | x_t = x] is
// v(x, t) = m + (sigma_t' / sigma_t) (x - t m), whose flow map from t to r is x -> r m + (sigma_r / sigma_t)(x - t m),
// so the average velocity is u(x, t, r) = (r m + (sigma_r / sigma_t)(x - t m) - x) / (r - t), and v at r = t.
struct Gaussians {
  torch::Tensor m = torch::tensor({1.0, -2.0, 0.5}, f64);
  double s = 0.6;
  torch::Tensor sigma(const torch::Tensor& t) const { return (t * t * s * s + (1 - t) * (1 - t)).sqrt(); }
  torch::Tensor velocity(const torch::Tensor& x, const torch::Tensor& t) const {
    auto tt = t.unsqueeze(1);
    auto rate = (tt * s * s - (1 - tt)) / sigma(tt).pow(2);
    return m + rate * (x - tt * m);
  }
  torch::Tensor average(const torch::Tensor& t, const torch::Tensor& r, const torch::Tensor& x) const {
    auto tt = t.unsqueeze(1), rr = r.unsqueeze(1);
    auto gap = rr - tt;
    auto safe = torch::where(gap == 0, torch::ones_like(gap), gap);
    auto jump = (rr * m + sigma(rr) / sigma(tt) * (x - tt * m) - x) / safe;
    return torch::where(gap == 0, velocity(x, t), jump);
  }
};

MeanFlowObjective toy_objective(const ProbPath& path) {
  Config c;
  c.objective.type = ObjectiveType::meanflow;
  c.model.mlp.second_time = true;
  return MeanFlowObjective(c, path, {});
}

TEST(MeanFlowTarget, EqualsTheExactAverageVelocityOfGaussians) {
  // With the exact average velocity in place of the network and the marginal velocity, the identity holds: the
  // target v + (r - t) (v . grad_x u + du/dt) is u itself, at every (t, r).
  Gaussians g;
  CondOTPath path;
  auto obj = toy_objective(path);
  torch::manual_seed(2);
  auto t = torch::tensor({0.0, 0.1, 0.3, 0.5, 0.9, 0.4}, f64), r = torch::tensor({1.0, 0.7, 0.35, 0.95, 1.0, 0.4}, f64);
  auto x = torch::randn({6, 3}, f64) * 1.3 + 0.2;
  PredictMean exact = [&](const torch::Tensor& tt, const torch::Tensor& rr, const torch::Tensor& xx,
                          const torch::Tensor&) { return g.average(tt, rr, xx); };
  auto p = obj.predict_and_target(exact, x, t, r, g.velocity(x, t), {});
  EXPECT_LT(max_abs(p.target - g.average(t, r, x)), 1e-10);
  EXPECT_LT(max_abs(p.u - g.average(t, r, x)), 1e-15);
  // A wrong sign of the time tangent (the paper's times taken as fm's) misses it.
  TensorFunction reversed = [&](const std::vector<torch::Tensor>& in) { return g.average(in[1], r, in[0]); };
  auto wrong = g.velocity(x, t) + (r - t).unsqueeze(1) *
                                      jvp_forward(reversed, {x, t}, {g.velocity(x, t), -torch::ones_like(t)}).tangent;
  EXPECT_GT(max_abs(wrong - g.average(t, r, x)), 1e-2);
}

TEST(MeanFlowTarget, FmsAverageVelocityIsMinusThePapersAtTranslatedTimes) {
  // The same Gaussians in the paper's times (data at 0, noise at 1): z_tau = (1 - tau) x1 + tau x0, mean (1 - tau) m,
  // scale sigma_p(tau) = sigma(1 - tau); its average velocity over [r, t] is (z - z_r) / (t - r) with
  // z_r = (1 - r) m + (sigma_p(r) / sigma_p(t)) (z - (1 - t) m).
  Gaussians g;
  torch::manual_seed(3);
  auto r_p = torch::tensor({0.0, 0.2, 0.5}, f64), t_p = torch::tensor({1.0, 0.6, 0.9}, f64);
  auto z = torch::randn({3, 3}, f64);
  auto rr = r_p.unsqueeze(1), tt = t_p.unsqueeze(1);
  auto z_r = (1 - rr) * g.m + g.sigma(1 - rr) / g.sigma(1 - tt) * (z - (1 - tt) * g.m);
  auto u_paper = (z - z_r) / (tt - rr);
  auto f = paper_to_fm_times(r_p, t_p);
  EXPECT_LT(max_abs(g.average(f.t, f.r, z) + u_paper), 1e-12);
}

TEST(MeanFlowSampler, ExactAverageVelocityMapsNoiseToDataInOneStep) {
  Gaussians g;
  torch::manual_seed(4);
  auto x0 = torch::randn({5, 3}, f64);
  MeanVelocityFunc u = [&](double t, double r, const torch::Tensor& x) {
    return g.average(torch::full({x.size(0)}, t, f64), torch::full({x.size(0)}, r, f64), x);
  };
  for (const std::vector<double>& grid : {std::vector<double>{0.0, 1.0}, std::vector<double>{0.0, 0.4, 1.0}}) {
    int calls = 0;
    auto res = solve_mean_flow(u, x0, grid, [&](double, const torch::Tensor&) { ++calls; });
    EXPECT_EQ(res.nfe, static_cast<int64_t>(grid.size()) - 1);
    EXPECT_EQ(calls, res.nfe);
    EXPECT_LT(max_abs(res.x - (g.m + g.s * x0)), 1e-12);
  }
}

TEST(MeanFlowSampler, GenerateStepsByTheNetworkAndRefusesANetworkOfOneTime) {
  MlpConfig mc;
  mc.hidden = 16, mc.depth = 2, mc.time_features = 4, mc.second_time = true;
  torch::manual_seed(0);
  MlpVelocity net(mc, 2);
  auto x0 = torch::randn({4, 2});
  SolveSettings s;
  s.solver = Solver::meanflow;
  s.steps = 1;
  auto one = generate(net, x0, {}, s);
  EXPECT_EQ(one.nfe, 1);
  torch::NoGradGuard ng;
  EXPECT_TRUE(torch::allclose(one.x, x0 + net.forward_mean(torch::zeros({4}), torch::ones({4}), x0, {})));
  s.steps = 4;
  EXPECT_EQ(generate(net, x0, {}, s).nfe, 4);
  mc.second_time = false;
  MlpVelocity plain(mc, 2);
  EXPECT_THROW(generate(plain, x0, {}, s), InputError);
}

// ---- the objective ------------------------------------------------------------------------------------------------

TEST(MeanFlowObjective, KeysThatCannotTrainAreInputErrorsNamingTheKey) {
  CondOTPath path;
  auto message = [&](const Config& c) {
    try {
      MeanFlowObjective o(c, path, conditioning_of(c.model));
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  Config c;
  c.objective.type = ObjectiveType::meanflow;
  EXPECT_EQ(message(c).rfind("model.mlp.second_time:", 0), 0u) << message(c);
  c.model.type = ModelType::unet;
  EXPECT_EQ(message(c).rfind("model.unet.second_time:", 0), 0u) << message(c);
  c.model.unet.second_time = true;
  EXPECT_EQ(message(c), "");
  c.model.target = Target::noise;
  EXPECT_EQ(message(c).rfind("model.target:", 0), 0u) << message(c);
  c.model.target = Target::velocity;
  c.path.coupling = Coupling::sb;
  EXPECT_EQ(message(c).rfind("path.coupling:", 0), 0u) << message(c);
  c.path.coupling = Coupling::independent;
  c.loss.type = LossType::pseudo_huber;
  EXPECT_EQ(message(c).rfind("loss.type:", 0), 0u) << message(c);
  c.loss.type = LossType::mse;
  c.objective.meanflow.omega = 2.0;
  EXPECT_EQ(message(c).rfind("objective.meanflow.omega:", 0), 0u) << message(c);  // unconditional
  c.model.unet.num_classes = 3;
  EXPECT_EQ(message(c), "");
}

// A stand-in "network" with one weight a: u = a * x + (r - t), for the plumbing of the loss.
struct StandIn {
  torch::Tensor a = torch::full({}, 0.5, torch::kFloat32).requires_grad_(true);
  PredictMean mean() {
    return [this](const torch::Tensor& t, const torch::Tensor& r, const torch::Tensor& x, const torch::Tensor&) {
      return a * x + broadcast_time(r - t, x);
    };
  }
};

TEST(MeanFlowObjective, ShardsOfTheBatchAverageToTheOneProcessLoss) {
  Config c;
  c.objective.type = ObjectiveType::meanflow;
  c.model.mlp.second_time = true;
  CondOTPath path;
  MeanFlowObjective obj(c, path, {});
  StandIn net;
  Batch b;
  torch::manual_seed(9);
  b.x = torch::randn({8, 2});
  torch::manual_seed(10);
  auto whole = obj.loss_from(b, {nullptr, net.mean()});
  double halves = 0;
  for (int64_t i = 0; i < 2; ++i) {
    torch::manual_seed(10);
    halves += obj.loss_from(b, {nullptr, net.mean()}, {i, 2}).item<double>() / 2;
  }
  EXPECT_NEAR(whole.item<double>(), halves, 1e-6 * whole.item<double>());
  EXPECT_THROW(obj.loss(b, nullptr), std::logic_error);
}

// fm reflow's pairs bring their own noise. Pairs whose noise is their sample have velocity x1 - x0 = 0 on every
// row, so against a network of zero average velocity (du/dt = 0 too) the loss is exactly 0; fresh noise would give
// each row |x1 - x0|^2 > 0. Pairs data and the pairs coupling go together, as in flow matching.
TEST(MeanFlowObjective, PairsTrainFromTheirOwnNoise) {
  Config c;
  c.objective.type = ObjectiveType::meanflow;
  c.model.mlp.second_time = true;
  c.path.coupling = Coupling::pairs;
  CondOTPath path;
  MeanFlowObjective obj(c, path, {});
  PredictMean zero = [](const torch::Tensor&, const torch::Tensor&, const torch::Tensor& x, const torch::Tensor&) {
    return x * 0.0;
  };
  Batch b;
  b.x = torch::randn({8, 2});
  b.x0 = b.x.clone();
  EXPECT_EQ(obj.loss_from(b, {nullptr, zero}).item<double>(), 0.0);
  auto message = [](const MeanFlowObjective& o, const Batch& batch, const PredictMean& net) {
    try {
      o.loss_from(batch, {nullptr, net});
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  Batch no_pairs;
  no_pairs.x = b.x;
  EXPECT_NE(message(obj, no_pairs, zero).find("pairs:DIR"), std::string::npos);
  c.path.coupling = Coupling::independent;
  MeanFlowObjective independent(c, path, {});
  EXPECT_EQ(message(independent, b, zero).rfind("path.coupling:", 0), 0u);
  EXPECT_GT(independent.loss_from(no_pairs, {nullptr, zero}).item<double>(), 0.1);
}

TEST(MeanFlowObjective, GuidanceFoldsTheUnconditionalVelocityIntoTheTarget) {
  // omega v + (1 - omega) u(x, t, t | null) on the rows that kept their label; with a stand-in whose u at r = t is
  // a x (label-blind), the guided loss differs from the unguided one exactly when omega != 1.
  Config c;
  c.objective.type = ObjectiveType::meanflow;
  c.model.type = ModelType::unet;
  c.model.unet.second_time = true;
  c.model.unet.num_classes = 2;
  CondOTPath path;
  StandIn net;
  Batch b;
  torch::manual_seed(9);
  b.x = torch::randn({16, 3});
  b.labels = torch::randint(0, 2, {16}, torch::kLong);
  auto loss_with = [&](double omega) {
    c.objective.meanflow.omega = omega;
    MeanFlowObjective obj(c, path, conditioning_of(c.model));
    torch::manual_seed(11);
    return obj.loss_from(b, {nullptr, net.mean()}).item<double>();
  };
  EXPECT_DOUBLE_EQ(loss_with(1.0), loss_with(1.0));
  EXPECT_GT(std::abs(loss_with(2.0) - loss_with(1.0)), 1e-4);
}

// ---- end to end ---------------------------------------------------------------------------------------------------

TEST(MeanFlowTrain, OneStepSamplesSpreadOverTheCheckerboardInAThousandSteps) {
  // The demo recipe shrunk to seconds. The untrained network's one step barely moves the noise (coordinate variance
  // about 1, and about half of it on the board's squares near the centre, so the board's share alone cannot tell);
  // the board's points have variance 16 / 3 per coordinate, which one step of the trained average velocity must
  // reach from noise.
  TempDir d;
  auto cfg = load_config(fm::test::source_dir() + "/configs/toy2d_meanflow.json",
                         {"device=" + fm::test::device_spec(), "model.mlp.hidden=64", "train.steps=1000",
                          "train.batch_size=256", "train.log_every=500", "train.ckpt_every=1000", "sample.n=200"});
  auto res = train(cfg, {d / "run", ""});
  auto one_step = [&](const std::string& key) {
    CheckpointReader ck(res.checkpoint, fm::test::device());
    auto m = make_velocity_field(ck.config().model, ck.sample_shape());
    if (!key.empty()) ck.load_module(key, *m);
    m->to(fm::test::device());
    torch::manual_seed(123);
    SolveSettings s;
    s.solver = Solver::meanflow;
    s.steps = 1;
    return generate(*m, torch::randn({4000, 2}).to(fm::test::device()), {}, s).x.cpu().to(torch::kFloat64);
  };
  const auto trained = one_step("ema"), untrained = one_step("");
  RecordProperty("one_step_on_board", std::to_string(on_checkerboard(trained).to(torch::kFloat64).mean().item<double>()));
  EXPECT_LT(untrained.var(0).max().item<double>(), 2.0);
  EXPECT_GT(trained.var(0).min().item<double>(), 3.5);
  EXPECT_LT(trained.var(0).max().item<double>(), 7.0);
  // Inside the board's square [-4, 4]^2, as the data always is.
  EXPECT_GT(((trained.abs() < 4).all(1)).to(torch::kFloat64).mean().item<double>(), 0.8);
}

// Random FID Inception weights (the network's own initialisation) as the export script lays them out.
std::string random_inception_weights(const TempDir& dir) {
  torch::manual_seed(3);
  FidInception net;
  std::vector<std::pair<std::string, torch::Tensor>> arrays;
  for (auto& p : net->named_parameters()) arrays.emplace_back(p.key(), p.value().detach());
  for (auto& b : net->named_buffers())
    if (b.key().find("num_batches_tracked") == std::string::npos) arrays.emplace_back(b.key(), b.value());
  write_npz(dir / "inception.npz", arrays);
  return dir / "inception.npz";
}

// A class-conditional U-Net on 8x8 shapes trained `steps` steps with `objective` (seconds on a CPU).
std::string tiny_shapes_checkpoint(const TempDir& dir, const std::string& name, ObjectiveType objective) {
  Config c;
  c.device = "cpu";
  c.data.format = DataFormat::shapes;
  c.data.path = "64";
  c.data.resolution = 8;
  c.model.type = ModelType::unet;
  c.model.unet = fm::test::tiny_unet({1, 2});
  c.model.unet.num_classes = 3;
  c.model.unet.second_time = objective == ObjectiveType::meanflow;
  c.objective.type = objective;
  c.train.steps = 3;
  c.train.batch_size = 8;
  c.train.log_every = 3;
  c.train.ckpt_every = 3;
  c.train.tensorboard = false;
  c.sample.solver = objective == ObjectiveType::meanflow ? Solver::meanflow : Solver::euler;
  c.sample.steps = 1;
  c.sample.n = 4;
  return train(c, {dir / name, ""}).checkpoint;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

TEST(MeanFlowCli, SampleTakesOneEvaluationAStepAndEvaluateAddsTheFewStepRows) {
  TempDir d;
  auto mf = tiny_shapes_checkpoint(d, "mf", ObjectiveType::meanflow);
  auto cfm = tiny_shapes_checkpoint(d, "cfm", ObjectiveType::cfm);
  const std::string fm_bin = fm::test::fm_binary() + " ";
  auto rs = fm::test::run(fm_bin + "sample --checkpoint " + mf + " -n 4 --batch 2 --solver meanflow --steps 2 "
                          "--device cpu --out " + (d / "s2"), d);
  ASSERT_EQ(rs.code, 0) << rs.err;
  auto s = read_json(d / "s2/samples.json");
  EXPECT_EQ(s["solver"], "meanflow");
  EXPECT_EQ(s["mean_nfe"].get<double>(), 2.0) << s.dump();
  // A network of one time has no average velocity: bad usage, before any work.
  auto rc = fm::test::run(fm_bin + "sample --checkpoint " + cfm + " -n 2 --solver meanflow --device cpu --out " +
                          (d / "bad"), d);
  EXPECT_EQ(rc.code, 2) << rc.err;
  EXPECT_NE(rc.err.find("solver meanflow"), std::string::npos) << rc.err;

  // fm evaluate: beside dopri5 (the network's velocity at r = t), the one- and two-step rows.
  auto weights = random_inception_weights(d);
  auto rf = fm::test::run(fm_bin + "fid-features --checkpoint " + mf + " --weights " + weights +
                          " --limit 8 --batch 8 --device cpu --out " + (d / "ref.npz"), d);
  ASSERT_EQ(rf.code, 0) << rf.err;
  auto re = fm::test::run(fm_bin + "evaluate --checkpoint " + mf + " --fid-ref " + (d / "ref.npz") +
                          " --fid-weights " + weights + " --no-nll --num-samples 4 --batch 4 --fid-batch 4 "
                          "--atol 1e-3 --rtol 1e-3 --device cpu --samples-dir " + (d / "eval") + " --out " +
                          (d / "eval.json"), d);
  ASSERT_EQ(re.code, 0) << re.err;
  auto j = read_json(d / "eval.json");
  ASSERT_EQ(j["fixed"].size(), 2u) << j.dump(1);
  for (int k = 0; k < 2; ++k) {
    EXPECT_EQ(j["fixed"][k]["solver"], "meanflow");
    EXPECT_EQ(j["fixed"][k]["steps"], k + 1);
    EXPECT_EQ(j["fixed"][k]["mean_nfe"].get<double>(), k + 1.0);
    EXPECT_TRUE(j["fixed"][k].contains("fid"));
  }
  EXPECT_NE(re.out.find("| FID meanflow 1 | FID meanflow 2 |"), std::string::npos) << re.out;
}

}  // namespace
}  // namespace fm::meanflow_test
