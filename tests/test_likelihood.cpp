// Likelihood against closed forms: a Gaussian target whose OT marginal velocity is known exactly, the zero field, a
// short-trained checkerboard model (normalised density, NLL near the true entropy), and the CLI end to end.

#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "test_util.h"
#include "trained_toy.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "config/config.h"
#include "data/toy2d.h"
#include "io/npy.h"
#include "eval/eval_nll.h"
#include "likelihood/likelihood.h"
#include "nn/velocity_field.h"
#include "solver/ode.h"
#include "checkpoint/checkpoint.h"
#include "train/trainer.h"
#include "data/dataset.h"
#include "io/file_util.h"
#include "util/error.h"
#include "util/preemption.h"

using fm::test::TempDir;

namespace {

// The CLI tests read stdout (JSON) and stderr (one-line errors) apart.
using fm::test::run;

// Data N(m, S) with S = Q diag(s^2) Q^T under the OT path x_t = t x1 + (1 - t) x0 (sigma_min = 0). x_t and the
// conditional velocity u = x1 - x0 are jointly Gaussian, so the marginal field is the regression of u on x_t:
//   v(t, x) = E[u] + Cov(u, x_t) Cov(x_t)^-1 (x - E[x_t]) = m + A_t (x - t m),
//   Cov(x_t) = (1-t)^2 I + t^2 S,  Cov(u, x_t) = t S - (1-t) I,  A_t = Q diag((t s^2 - (1-t)) / ((1-t)^2 + t^2 s^2)) Q^T.
// It transports N(0, I) at t=0 to N(m, S) at t=1. Drawn on the CPU, held on the test device.
struct GaussianTarget {
  torch::Tensor m, s2, q;  // [D], [D], [D, D] (float64)

  explicit GaussianTarget(int64_t d) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
    auto opts = torch::TensorOptions().dtype(torch::kFloat64);
    m = torch::randn({d}, gen, opts);
    s2 = torch::linspace(0.25, 2.5, d, opts).square();  // stds from 0.25 to 2.5
    q = std::get<0>(at::linalg_qr(torch::randn({d, d}, gen, opts)));
    m = m.to(fm::test::device());
    s2 = s2.to(fm::test::device());
    q = q.to(fm::test::device());
  }
  int64_t dim() const { return m.size(0); }
  torch::Tensor cov() const { return q.matmul(torch::diag(s2)).matmul(q.t()); }
  torch::Tensor jacobian(double t) const {
    auto lam = (t * s2 - (1 - t)) / ((1 - t) * (1 - t) + t * t * s2);
    return q.matmul(torch::diag(lam)).matmul(q.t());
  }
  fm::VelocityFn field() const {
    return [this](const torch::Tensor& t, const torch::Tensor& x) {
      double tv = t[0].item<double>();
      auto a = jacobian(tv).to(x.dtype());
      return m.to(x.dtype()) + (x - tv * m.to(x.dtype())).matmul(a.t());
    };
  }
  torch::Tensor log_density(const torch::Tensor& x) const {
    auto xd = x.to(torch::kFloat64) - m;
    auto z = xd.matmul(q);  // coordinates in the eigenbasis
    const double d = static_cast<double>(dim());
    return -0.5 * (z.square() / s2).sum(1) - 0.5 * s2.log().sum() - 0.5 * d * std::log(2 * M_PI);
  }
  torch::Tensor sample(int64_t n, uint64_t seed) const {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    auto z = torch::randn({n, dim()}, gen, torch::TensorOptions().dtype(torch::kFloat64)).to(m.device());
    return m + (z * s2.sqrt()).matmul(q.t());
  }
};

// A small toy checkpoint for the CLI tests (seconds to train).
std::string tiny_checkpoint(const TempDir& dir) {
  auto cfg = fm::load_config(std::string(FM_SOURCE_DIR) + "/configs/toy2d.json",
                             {"device=" + fm::test::device_spec(), "train.steps=20", "train.batch_size=64",
                              "train.warmup_steps=0",
                              "model.mlp.hidden=32", "model.mlp.depth=2", "train.ckpt_every=20", "sample.n=100",
                              "sample.steps=4"});
  fm::TrainOptions opts;
  opts.out_dir = dir / "run";
  return fm::train(cfg, opts).checkpoint;
}

}  // namespace

TEST(LikelihoodGaussian, ExactDivergenceMatchesJacobianTrace) {
  GaussianTarget g(4);
  auto x = g.sample(5, 1);
  auto t = torch::full({5}, 0.3, x.options());
  auto div = fm::divergence(g.field(), t, x, fm::Divergence::exact);
  double trace = g.jacobian(0.3).trace().item<double>();
  for (int64_t i = 0; i < 5; ++i) EXPECT_NEAR(div[i].item<double>(), trace, 1e-12);
}

TEST(LikelihoodGaussian, ExactLogLikelihoodMatchesLogDensity) {
  GaussianTarget g(4);
  // 32 typical points and one far in the tail (about 12 standard deviations along the narrowest axis).
  auto x = torch::cat({g.sample(32, 2), g.m.unsqueeze(0) + 3.0});
  auto expected = g.log_density(x);
  fm::LikelihoodOptions o;
  o.divergence = fm::Divergence::exact;
  // The error shrinks with the tolerance: about tol on typical points, more on the far point, whose log-density and
  // divergence integral are large.
  for (double tol : {1e-5, 1e-8}) {
    o.atol = o.rtol = tol;
    auto r = fm::log_likelihood(g.field(), x, o);
    auto err = (r.log_p - expected).abs();
    EXPECT_LT(err.narrow(0, 0, 32).max().item<double>(), 10 * tol) << "tolerance " << tol;
    EXPECT_LT(err[32].item<double>(), 1e3 * tol) << "tolerance " << tol;
    EXPECT_GT(r.nfe, 8);
  }
  // float32 (as models run) at the default tolerance.
  o.atol = o.rtol = 1e-5;
  auto r = fm::log_likelihood(g.field(), x.to(torch::kFloat32), o);
  EXPECT_LT((r.log_p - expected).narrow(0, 0, 32).abs().max().item<double>(), 2e-4);
  // The data point flows back to its noise: x0 = S^-1/2 (x - m) with the symmetric square root.
  auto z0 = ((x - g.m).matmul(g.q) / g.s2.sqrt()).matmul(g.q.t());
  EXPECT_LT((r.x0.to(torch::kFloat64) - z0).abs().max().item<double>(), 1e-3);
}

TEST(LikelihoodGaussian, HutchinsonIsUnbiased) {
  GaussianTarget g(4);
  const int64_t n = 1000;
  auto x = g.sample(n, 3);
  auto expected = g.log_density(x);
  fm::LikelihoodOptions o;
  o.divergence = fm::Divergence::hutchinson;
  o.atol = o.rtol = 1e-6;
  for (fm::Probe kind : {fm::Probe::rademacher, fm::Probe::gaussian}) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
    auto e = fm::make_probe(kind, {n, 4}, gen).to(x.device(), torch::kFloat64);
    if (kind == fm::Probe::rademacher) EXPECT_TRUE((e.abs() == 1).all().item<bool>());
    auto r = fm::log_likelihood(g.field(), x, o, e);
    auto diff = r.log_p - expected;
    double mean = diff.mean().item<double>(), se = diff.std().item<double>() / std::sqrt(double(n));
    // The field's Jacobian is not diagonal, so single probes do err (the test is not vacuous)...
    EXPECT_GT(diff.std().item<double>(), 0.05) << kind;
    // ...but on average the estimate is the exact log-likelihood.
    EXPECT_LT(std::fabs(mean), 4 * se + 1e-4) << kind << ": mean error " << mean << " +- " << se;
  }
}

TEST(LikelihoodGaussian, SamplingReachesTarget) {
  GaussianTarget g(3);
  const int64_t n = 4000;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  auto x0 = torch::randn({n, 3}, gen, torch::TensorOptions().dtype(torch::kFloat64)).to(fm::test::device());
  auto v = g.field();
  fm::OdeFunc f = [&](double t, const torch::Tensor& x) { return v(torch::full({x.size(0)}, t, x.options()), x); };
  auto x1 = fm::solve_ode(f, x0, {0.0, 1.0}, fm::Solver::dopri5).x;
  auto mean = x1.mean(0), cov = torch::cov(x1.t());
  auto target_cov = g.cov();
  // Standard errors: sqrt(S_ii / n) for the mean, sqrt((S_ii S_jj + S_ij^2) / n) for the covariance.
  auto diag = target_cov.diag();
  auto se_mean = (diag / n).sqrt();
  auto se_cov = ((diag.unsqueeze(1) * diag.unsqueeze(0) + target_cov.square()) / n).sqrt();
  EXPECT_TRUE(((mean - g.m).abs() < 4 * se_mean).all().item<bool>()) << mean << g.m;
  EXPECT_TRUE(((cov - target_cov).abs() < 4 * se_cov).all().item<bool>()) << cov << target_cov;
  // The flow is deterministic and linear: the sample covariance of the pushed noise is exactly the pushed
  // covariance of the noise sample, so compare the map itself too.
  auto l = (g.q * g.s2.sqrt()).matmul(g.q.t());  // symmetric square root of S
  EXPECT_LT((x1 - (g.m + x0.matmul(l))).abs().max().item<double>(), 1e-3);
}

TEST(LikelihoodZeroField, BitsPerDimClosedForm) {
  // Under the zero field x0 = x1, so log p(y) = log N(y; 0, I) and bits/dim has a closed form.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(9);
  auto v = torch::randint(0, 256, {3, 3, 4, 4}, gen, torch::TensorOptions().dtype(torch::kUInt8));
  auto u = torch::rand({3, 3, 4, 4}, gen, torch::TensorOptions().dtype(torch::kFloat64));
  auto y = fm::dequantize(v, u).to(fm::test::device());
  fm::VelocityFn zero = [](const torch::Tensor&, const torch::Tensor& x) { return torch::zeros_like(x); };
  auto e = fm::make_probe(fm::Probe::rademacher, {3, 3, 4, 4}, gen).to(fm::test::device());
  auto r = fm::log_likelihood(zero, y, {}, e);
  auto bpd = fm::bits_per_dim(r.log_p, 48);
  auto va = v.accessor<uint8_t, 4>();
  auto ua = u.accessor<double, 4>();
  for (int64_t b = 0; b < 3; ++b) {
    double sq = 0;
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t h = 0; h < 4; ++h)
        for (int64_t w = 0; w < 4; ++w) {
          double yy = 2.0 * (va[b][c][h][w] + ua[b][c][h][w]) / 256.0 - 1.0;
          sq += yy * yy;
        }
    double log_p = -0.5 * sq - 24.0 * std::log(2 * M_PI);
    EXPECT_NEAR(r.log_p[b].item<double>(), log_p, 1e-9);
    EXPECT_NEAR(bpd[b].item<double>(), -log_p / (48 * std::log(2.0)) + 7.0, 1e-6);
  }
}

TEST(LikelihoodBitsPerDim, UniformDensityCostsEightBits) {
  // A density uniform on [-1, 1)^D (log p = -D ln 2) spreads mass evenly over the 256 levels: exactly 8 bits/dim.
  const int64_t d = 3072;
  auto lp = torch::full({2}, -d * std::log(2.0), torch::TensorOptions().dtype(torch::kFloat64));
  auto bpd = fm::bits_per_dim(lp, d);
  EXPECT_NEAR(bpd[0].item<double>(), 8.0, 1e-12);
  // Dequantisation covers [-1, 1): level 0 + 0 maps to -1, level 255 + (1 - eps) to just below 1.
  auto lo = fm::dequantize(torch::zeros({1}, torch::kUInt8), torch::zeros({1}, torch::kFloat64));
  auto hi = fm::dequantize(torch::full({1}, 255, torch::kUInt8), torch::full({1}, 1 - 1e-9, torch::kFloat64));
  EXPECT_DOUBLE_EQ(lo.item<double>(), -1.0);
  EXPECT_NEAR(hi.item<double>(), 1.0, 1e-8);
  EXPECT_LT(hi.item<double>(), 1.0);
  // Importance weighting: log of the mean likelihood over draws.
  auto a = torch::tensor({{-3.0, -1.0}}, torch::kFloat64);
  EXPECT_NEAR(fm::logmeanexp(a, 1).item<double>(), std::log((std::exp(-3.0) + std::exp(-1.0)) / 2), 1e-12);
}

TEST(LikelihoodToy, CheckerboardDensityIsNormalisedAndNllNearEntropy) {
  auto ckpt = fm::test::trained_toy2d_checkpoint();

  // The density at cell midpoints over the plot window (exact divergence) integrates to 1.
  fm::CheckpointReader ck(ckpt, fm::test::device());
  auto model = fm::make_velocity_field(ck.config().model, ck.sample_shape());
  ck.load_module("ema", *model);
  model->to(fm::test::device());
  model->eval();
  for (auto& p : model->parameters()) p.requires_grad_(false);
  fm::VelocityFn vf = [&](const torch::Tensor& t, const torch::Tensor& x) { return (*model)(t, x); };
  const int64_t k = 40;
  const double lim = fm::kToyPlotLimit, h = 2 * lim / k;
  auto c = torch::linspace(-lim + h / 2, lim - h / 2, k, fm::test::opts());
  auto grid = torch::stack(torch::meshgrid({c, c}, "ij"), -1).reshape({-1, 2});
  fm::LikelihoodOptions o;
  o.divergence = fm::Divergence::exact;
  o.atol = o.rtol = 1e-4;  // ample for 2%: the tolerance moves log p by about 1e-3
  auto r = fm::log_likelihood(vf, grid, o);
  double mass = r.log_p.exp().sum().item<double>() * h * h;
  EXPECT_NEAR(mass, 1.0, 0.02);

  // NLL of held-out points via the library function of `fm eval-nll`, against the data's entropy, log of the filled area.
  fm::EvalNllOptions eo;
  eo.checkpoint = ckpt;
  eo.data = "toy:checkerboard";
  eo.limit = 500;
  eo.batch = 500;
  eo.divergence = fm::Divergence::exact;
  eo.atol = eo.rtol = 1e-4;
  eo.device = fm::test::device_spec();
  eo.seed = 123;
  auto s = fm::run_eval_nll(eo);
  EXPECT_EQ(s.metric, "nll_nats");
  EXPECT_EQ(s.n, 500);
  // The cross-entropy of the data under the model is never below the data's entropy (beyond sampling error)...
  EXPECT_GT(s.mean + 4 * s.stderr_mean, std::log(fm::kCheckerboardArea));
  // ...and a trained model comes close to it.
  EXPECT_NEAR(s.mean, std::log(fm::kCheckerboardArea), 0.3) << "+- " << s.stderr_mean << ", mass " << mass;
}

TEST(LikelihoodCli, SampleNpzAndEvalNllOutputsReadByNumpy) {
  TempDir dir;
  auto ckpt = tiny_checkpoint(dir);
  const std::string fm_bin = FM_BINARY, py = FM_PYTHON_EXE;

  auto sdir = dir / "samples";
  auto rs = run(fm_bin + " sample --checkpoint " + ckpt + " --num-samples 10 --batch 4 --solver euler --steps 4" +
                    fm::test::device_flag() + " --out " +
                    sdir, dir);
  ASSERT_EQ(rs.code, 0) << rs.err;
  auto rp = run(py + " -c \"import numpy as np; a = np.load('" + sdir + "/samples.npz" +
                    "')['arr_0']; assert a.shape == (10, 2), a.shape; assert a.dtype == np.float32, a.dtype; "
                    "assert np.isfinite(a).all(); print('ok')\"", dir);
  ASSERT_EQ(rp.code, 0) << rp.err;
  EXPECT_EQ(rp.out, "ok\n");

  auto json_path = dir / "nll.json", per_path = dir / "per.npy";
  auto re = run(fm_bin + " eval-nll --checkpoint " + ckpt + " --data toy:checkerboard --limit 30 --batch 16 " +
                    "--atol 1e-7 --rtol 1e-7" + fm::test::device_flag() + " --out " + json_path + " --per-image " +
                    per_path,
                dir);
  ASSERT_EQ(re.code, 0) << re.err;
  std::ifstream in(json_path);
  auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j["metric"], "nll_nats");
  EXPECT_EQ(j["n"], 30);
  EXPECT_EQ(j["divergence"], "hutchinson");
  EXPECT_GT(j["mean_nfe"].get<double>(), 8);
  EXPECT_EQ(nlohmann::json::parse(re.out), j);  // the same object on stdout
  EXPECT_FALSE(j.contains("split")) << "2-D points have no split";
  EXPECT_EQ(j["checkpoint_crc32"].get<std::string>().size(), 8u);
  EXPECT_EQ(j["subset"], "30 points drawn from the seed");
  // numpy reads the per-point values, and their mean and standard error are the reported ones.
  auto rn = run(py + " -c \"import numpy as np; a = np.load('" + per_path +
                    "'); assert a.shape == (30,) and a.dtype == np.float64; "
                    "print(repr(float(a.mean())), repr(float(a.std(ddof=1) / np.sqrt(a.size))))\"", dir);
  ASSERT_EQ(rn.code, 0) << rn.err;
  std::istringstream ss(rn.out);
  double mean = 0, se = 0;
  ss >> mean >> se;
  EXPECT_NEAR(mean, j["mean"].get<double>(), 1e-9);
  EXPECT_NEAR(se, j["stderr"].get<double>(), 1e-9);
  EXPECT_GT(se, 0);

  // The same points and probes whatever the batch size (the adaptive steps are shared within a batch, so values agree
  // to the solver's tolerance, here tight); text output when the name is not .npy.
  auto txt_path = dir / "per.txt";
  auto re2 = run(fm_bin + " eval-nll --checkpoint " + ckpt + " --data toy:checkerboard --limit 30 --batch 7 " +
                     "--atol 1e-7 --rtol 1e-7" + fm::test::device_flag() + " --per-image " + txt_path, dir);
  ASSERT_EQ(re2.code, 0) << re2.err;
  auto a = fm::read_npy(per_path);
  std::ifstream txt(txt_path);
  double val = 0;
  int64_t i = 0;
  for (; txt >> val; ++i) EXPECT_NEAR(val, a[i].item<double>(), 1e-4);
  EXPECT_EQ(i, 30);
}

TEST(LikelihoodCli, BadInputsExitWithCodeTwoAndOneLine) {
  TempDir dir;
  const std::string fm_bin = FM_BINARY;
  auto one_line = [](const std::string& s) { return !s.empty() && s.find('\n') == s.size() - 1; };

  auto missing = dir / "nope.pt";
  auto r1 =
      run(fm_bin + " eval-nll --checkpoint " + missing + " --data toy:checkerboard" + fm::test::device_flag(), dir);
  EXPECT_EQ(r1.code, 2);
  EXPECT_TRUE(one_line(r1.err)) << r1.err;
  EXPECT_NE(r1.err.find(missing), std::string::npos) << r1.err;

  auto ckpt = tiny_checkpoint(dir);
  for (const char* spec : {"bogus:x", "checkerboard", "toy:no_such_toy"}) {
    auto r = run(fm_bin + " eval-nll --checkpoint " + ckpt + " --data " + spec + fm::test::device_flag(), dir);
    EXPECT_EQ(r.code, 2) << spec;
    EXPECT_TRUE(one_line(r.err)) << spec << ": " << r.err;
  }
  auto r2 = run(fm_bin + " eval-nll --checkpoint " + ckpt + " --data toy:moons --divergence maybe", dir);
  EXPECT_EQ(r2.code, 2);
  EXPECT_TRUE(one_line(r2.err)) << r2.err;

  // Outputs are checked before the work, here before the (missing) checkpoint is even read.
  fm::write_file_atomic(dir / "plain", "a file, not a directory");
  for (const std::string opt : {"--out", "--per-image"}) {
    auto r = run(fm_bin + " eval-nll --checkpoint " + missing + " --data toy:moons " + opt + " " + dir / "plain/x",
                 dir);
    EXPECT_EQ(r.code, 2) << opt;
    EXPECT_TRUE(one_line(r.err)) << r.err;
    EXPECT_EQ(r.err.rfind("fm: error: " + opt + " " + dir / "plain/x", 0), 0u) << r.err;
  }
  // ... and their directories created, as fm sample and fm train create theirs.
  auto nested = dir / "new/dir/nll.json";
  auto r3 = run(fm_bin + " eval-nll --checkpoint " + ckpt + " --data toy:moons --limit 8 --device cpu --out " + nested,
                dir);
  EXPECT_EQ(r3.code, 0) << r3.err;
  EXPECT_TRUE(std::filesystem::exists(nested));
}

// A signal stops eval-nll after the batch in flight; it keeps no partial results and says so.
TEST(LikelihoodEvalNll, SignalStopsBetweenBatches) {
  TempDir dir;
  fm::EvalNllOptions o;
  o.checkpoint = tiny_checkpoint(dir);
  o.data = "toy:checkerboard";
  o.limit = 40;
  o.batch = 16;
  o.device = "cpu";
  o.out = dir / "nll.json";
  fm::install_stop_handlers();
  std::raise(SIGTERM);
  try {
    fm::run_eval_nll(o);
    ADD_FAILURE() << "did not stop";
  } catch (const fm::StopRequested& e) {
    EXPECT_EQ(e.signal, SIGTERM);
    EXPECT_FALSE(e.state_saved);
  }
  fm::reset_stop_request();
  EXPECT_FALSE(std::filesystem::exists(o.out));
  EXPECT_EQ(fm::run_eval_nll(o).n, 40);
}

// The unconditional likelihood of a class-conditional model goes through its null label, which
// class_dropout 0 leaves untrained.
TEST(LikelihoodEvalNll, UntrainedNullLabelIsRefused) {
  TempDir dir;
  fm::Config c;
  c.device = "cpu";
  c.data = fm::parse_data_spec("shapes:16");
  c.data.resolution = 8;
  c.model.type = fm::ModelType::unet;
  c.model.unet = fm::test::tiny_unet();
  c.model.unet.num_classes = 3;
  c.model.unet.class_dropout = 0.0;
  c.train.steps = 1;
  c.train.batch_size = 4;
  c.sample.steps = 1;
  fm::EvalNllOptions o;
  o.checkpoint = fm::train(c, {dir / "run", ""}).checkpoint;
  o.data = "shapes:4";
  o.device = "cpu";
  try {
    fm::run_eval_nll(o);
    ADD_FAILURE() << "no error";
  } catch (const fm::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("class_dropout 0"), std::string::npos) << e.what();
  }
}
