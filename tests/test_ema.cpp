// Post-hoc EMA (Karras et al. 2024, EDM2): the power-function profile math against closed forms and numerical
// integration, the profiles a run keeps, their snapshot files, the reconstruction of an EMA of any length, and the
// commands on top (fm ema, fm evaluate --ema-sweep), on one process and two.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint.h"
#include "checkpoint/network.h"
#include "checkpoint/phema_math.h"
#include "checkpoint/phema_reconstruct.h"
#include "checkpoint/phema_snapshot.h"
#include "checkpoint/seal.h"
#include "eval/ema_sweep.h"
#include "nn/velocity_field.h"
#include "test_util.h"
#include "torchrun_util.h"
#include "train/phema.h"
#include "train/trainer.h"
#include "util/error.h"

namespace fm::test {
namespace {

namespace fs = std::filesystem;
using phema::Profile;

// Simpson's rule for the integral of f over [a, b] with n (even) intervals.
template <class F>
double simpson(F f, double a, double b, int n = 20000) {
  const double h = (b - a) / n;
  double s = f(a) + f(b);
  for (int i = 1; i < n; ++i) s += (i % 2 ? 4.0 : 2.0) * f(a + i * h);
  return s * h / 3.0;
}

// The power-function profile p_t(tau) = (gamma + 1) tau^gamma / t^(gamma + 1) on [0, t], 0 after.
double profile_at(const Profile& p, double tau) {
  return tau > p.t ? 0.0 : (p.gamma + 1.0) * std::pow(tau / p.t, p.gamma) / p.t;
}

// ---- the math ----------------------------------------------------------------------------------------------------

TEST(PhemaMath, SigmaRelAndGammaAreInverses) {
  // The largest real roots of gamma^3 + 7 gamma^2 + (16 - s^-2) gamma + 12 - s^-2, by numpy.roots.
  const std::vector<std::pair<double, double>> known = {
      {0.05, 16.972198602303447}, {0.10, 6.937203937601809}, {0.075, 10.289116448983853},
      {0.2, 1.8262137798958404},  {0.01, 96.99489782370986}};
  for (const auto& [s, g] : known) {
    const double gamma = phema::sigma_rel_to_gamma(s);
    EXPECT_NEAR(gamma, g, 1e-9 * g) << "sigma_rel " << s;
    EXPECT_NEAR(phema::gamma_to_sigma_rel(gamma), s, 1e-14) << "sigma_rel " << s;
    const double t = 1.0 / (s * s);
    EXPECT_NEAR(((gamma + 7.0) * gamma + 16.0 - t) * gamma + 12.0 - t, 0.0, 1e-9 * t * gamma) << "sigma_rel " << s;
  }
  // sigma_rel is the standard deviation of the profile over t, by integration.
  for (double g : {2.0, 6.937203937601809, 16.972198602303447}) {
    const Profile p{3.0, g};
    const double mean = simpson([&](double u) { return u * profile_at(p, u); }, 0.0, p.t);
    const double var = simpson([&](double u) { return (u - mean) * (u - mean) * profile_at(p, u); }, 0.0, p.t);
    EXPECT_NEAR(std::sqrt(var) / p.t, phema::gamma_to_sigma_rel(g), 1e-9) << "gamma " << g;
  }
  EXPECT_NEAR(phema::sigma_rel_to_gamma(phema::kMaxSigmaRel), 0.0, 1e-12);
  EXPECT_THROW(phema::sigma_rel_to_gamma(0.0), std::invalid_argument);
  EXPECT_THROW(phema::sigma_rel_to_gamma(0.29), std::invalid_argument);
}

TEST(PhemaMath, ProfileInnerProductsMatchNumericalIntegration) {
  const std::vector<Profile> ps = {{100.0, 16.97}, {100.0, 6.94}, {40.0, 6.94}, {250.0, 2.5}, {70.0, 30.0}};
  for (const auto& a : ps)
    for (const auto& b : ps) {
      const double numeric =
          simpson([&](double u) { return profile_at(a, u) * profile_at(b, u); }, 0.0, std::min(a.t, b.t));
      EXPECT_NEAR(phema::profile_dot(a, b), numeric, 1e-8 * numeric)
          << "(" << a.t << ", " << a.gamma << ") . (" << b.t << ", " << b.gamma << ")";
      EXPECT_DOUBLE_EQ(phema::profile_dot(a, b), phema::profile_dot(b, a));
    }
}

// Snapshots of EDM2's two profiles every `every` steps up to `last`.
std::vector<Profile> two_tracked_profiles(int last, int every) {
  std::vector<Profile> in;
  for (int t = every; t <= last; t += every)
    for (double s : {0.05, 0.10}) in.push_back({double(t), phema::sigma_rel_to_gamma(s)});
  return in;
}

TEST(PhemaMath, ATrackedProfileIsReconstructedByItselfAlone) {
  const auto in = two_tracked_profiles(1000, 100);
  for (size_t k : {size_t(19), size_t(18), size_t(7)}) {
    const auto x = phema::solve_posthoc_coefficients(in, in[k]);
    ASSERT_EQ(x.size(), in.size());
    for (size_t i = 0; i < x.size(); ++i)
      EXPECT_NEAR(x[i], i == k ? 1.0 : 0.0, 1e-7) << "target " << k << " input " << i;
  }
}

TEST(PhemaMath, AnUntrackedLengthIsTheLeastSquaresFit) {
  const auto in = two_tracked_profiles(1000, 50);
  const Profile target{1000.0, phema::sigma_rel_to_gamma(0.075)};
  const auto x = phema::solve_posthoc_coefficients(in, target);
  double sum = 0.0;
  for (double v : x) sum += v;
  EXPECT_NEAR(sum, 1.0, 1e-12);
  // The squared L2 distance between the combined and the target profile, by integration (independent of
  // profile_dot), for a combination x.
  auto misfit = [&](const std::vector<double>& c) {
    return simpson(
        [&](double u) {
          double v = -profile_at(target, u);
          for (size_t i = 0; i < in.size(); ++i) v += c[i] * profile_at(in[i], u);
          return v * v;
        },
        0.0, target.t, 40000);
  };
  const double norm = simpson([&](double u) { return profile_at(target, u) * profile_at(target, u); }, 0.0, target.t);
  const double fit = misfit(x);
  EXPECT_LT(fit, 1e-3 * norm) << "the fit's squared error relative to the target's squared norm";
  // Better than either tracked profile of the last step alone, and than their plain mean.
  std::vector<double> only(in.size(), 0.0);
  for (size_t k : {in.size() - 2, in.size() - 1}) {
    only.assign(in.size(), 0.0);
    only[k] = 1.0;
    EXPECT_LT(fit, 0.01 * misfit(only)) << "input " << k;
  }
  only.assign(in.size(), 0.0);
  only[in.size() - 2] = only[in.size() - 1] = 0.5;
  EXPECT_LT(fit, 0.1 * misfit(only));
  // A least-squares fit: moving any coefficient (keeping the sum at 1 by moving the largest against it) worsens it.
  const size_t big = std::max_element(x.begin(), x.end()) - x.begin();
  for (size_t i : {size_t(0), in.size() / 2, in.size() - 1}) {
    if (i == big) continue;
    auto y = x;
    y[i] += 1e-2, y[big] -= 1e-2;
    EXPECT_GT(misfit(y), fit) << "coefficient " << i;
  }
  EXPECT_THROW(phema::solve_posthoc_coefficients({}, target), std::invalid_argument);
  EXPECT_THROW(phema::solve_posthoc_coefficients({in[3], in[3]}, target), std::invalid_argument);
}

TEST(PhemaMath, TheBetaScheduleWeighsEachStepAsTheProfile) {
  // Run the recursion avg <- beta_t avg + (1 - beta_t) w_t over scalar "weights" and compare it with the closed form
  // of the weight it gives step tau: (1 - beta_tau) prod_{s > tau} beta_s = (1 - beta_tau) (tau / T)^(gamma + 1).
  const double gamma = phema::sigma_rel_to_gamma(0.1);
  const int T = 500;
  double avg = 0.0, sum_w = 0.0, mean = 0.0, second = 0.0;
  auto w = [&](double t) { return 0.1 * t + std::sin(t); };
  for (int t = 1; t <= T; ++t) {
    const double beta = phema::power_ema_beta(gamma, t);
    avg = beta * avg + (1.0 - beta) * w(t);
  }
  double closed = 0.0;
  for (int tau = 1; tau <= T; ++tau) {
    const double weight = (1.0 - phema::power_ema_beta(gamma, tau)) * std::pow(double(tau) / T, gamma + 1.0);
    closed += weight * w(tau);
    sum_w += weight;
    mean += weight * tau;
    second += weight * tau * tau;
  }
  EXPECT_EQ(phema::power_ema_beta(gamma, 1.0), 0.0);
  EXPECT_NEAR(avg, closed, 1e-10 * std::abs(closed));
  EXPECT_NEAR(sum_w, 1.0, 1e-12);
  // And those weights have the profile's relative standard deviation, up to the discreteness of 500 steps.
  EXPECT_NEAR(std::sqrt(second - mean * mean) / T, 0.1, 2e-3);
}

// ---- the profiles a run keeps --------------------------------------------------------------------------------

TEST(PowerEma, TracksTheClosedFormAndHoldsStillOnSkippedSteps) {
  torch::nn::Linear model(1, 1);
  torch::manual_seed(3);
  const auto before = torch::rand({4});
  torch::manual_seed(3);
  PowerEma ema({0.05, 0.10}, *model, [] { return torch::nn::Linear(1, 1).ptr(); });
  EXPECT_TRUE(torch::equal(torch::rand({4}), before)) << "building the profiles drew from the CPU stream";
  const int T = 200, skipped = 37;
  auto zero = torch::zeros({}), one = torch::ones({});
  torch::Tensor held;
  for (int t = 1; t <= T; ++t) {
    {
      torch::NoGradGuard ng;
      model->weight.fill_(std::cos(0.05 * t));
      model->bias.fill_(t);
    }
    if (t == skipped) held = ema.parameters()[0].clone();
    ema.update(t == skipped ? one : zero);
    if (t == skipped) EXPECT_TRUE(torch::equal(ema.parameters()[0], held));
  }
  // Closed form: the recursion's weights with step `skipped` taking none (its beta counts as 1).
  for (size_t k = 0; k < 2; ++k) {
    const double gamma = phema::sigma_rel_to_gamma(ema.sigma_rels()[k]);
    double w_sum = 0.0, b_sum = 0.0, later = 1.0;
    for (int tau = T; tau >= 1; --tau) {
      const double beta = tau == skipped ? 1.0 : phema::power_ema_beta(gamma, tau);
      w_sum += (1.0 - beta) * later * std::cos(0.05 * tau);
      b_sum += (1.0 - beta) * later * tau;
      later *= beta;
    }
    const auto params = ema.parameters();  // profile k: weight, bias
    EXPECT_NEAR(params[2 * k].item<double>(), w_sum, 1e-5) << "profile " << k;
    EXPECT_NEAR(params[2 * k + 1].item<double>(), b_sum, 1e-5 * b_sum) << "profile " << k;
  }
}

// ---- snapshot files ----------------------------------------------------------------------------------------------

TEST(PhemaSnapshot, RoundTripsSealedAndIsListedPrunedAndMovedAside) {
  TempDir d;
  torch::nn::Linear model(3, 2);
  PowerEma ema({0.05, 0.2}, *model, [] { return torch::nn::Linear(3, 2).ptr(); });
  ema.update(torch::zeros({}));
  for (int step : {30, 10, 20}) save_phema_snapshot(d / phema_snapshot_name(step), step, ema);
  const auto listed = list_phema_snapshots(d.str());
  ASSERT_EQ(listed.size(), 3u);
  EXPECT_EQ(listed[0].first, 10);
  EXPECT_EQ(listed[2].second, d / "phema_000000030.pt");

  PhemaSnapshotReader r(d / phema_snapshot_name(20));
  EXPECT_EQ(r.step(), 20);
  EXPECT_EQ(r.sigma_rels(), (std::vector<double>{0.05, 0.2}));
  torch::nn::Linear back(3, 2);
  r.load_profile(1, *back);
  EXPECT_TRUE(torch::equal(back->weight, model->weight));
  EXPECT_THROW(r.load_profile(2, *back), InputError);
  torch::nn::Linear other(4, 2);
  EXPECT_THROW(r.load_profile(0, *other), InputError);

  // A flipped byte fails the seal before anything is parsed.
  {
    std::fstream f(d / phema_snapshot_name(10), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x5a');
  }
  EXPECT_THROW(PhemaSnapshotReader(d / phema_snapshot_name(10)), CorruptCheckpoint);

  const auto moved = move_aside_phema_snapshots_after(d.str(), 10);
  ASSERT_EQ(moved.size(), 2u);
  EXPECT_NE(moved[0].find("/abandoned_"), std::string::npos);
  EXPECT_EQ(list_phema_snapshots(d.str()).size(), 1u);
  save_phema_snapshot(d / phema_snapshot_name(40), 40, ema);
  prune_phema_snapshots(d.str(), 1);
  ASSERT_EQ(list_phema_snapshots(d.str()).size(), 1u);
  EXPECT_EQ(list_phema_snapshots(d.str())[0].first, 40);
}

// ---- training with profiles ---------------------------------------------------------------------------------------

Config toy_config(int64_t steps, int64_t snapshot_every, std::vector<double> sigma_rels = {0.05, 0.10}) {
  Config c;
  c.device = device_spec();
  c.data.path = "eight_gaussians";
  c.model.mlp.hidden = 32;
  c.model.mlp.depth = 2;
  c.train.steps = steps;
  c.train.batch_size = 64;
  c.train.lr = 3e-3;
  c.train.log_every = 10;
  c.train.ckpt_every = 10;
  c.train.keep_last = 100;
  c.train.tensorboard = false;
  c.train.ema_snapshot_every = snapshot_every;
  c.train.phema_sigma_rels = std::move(sigma_rels);
  c.sample.n = 50;
  c.sample.steps = 2;
  return c;
}

std::vector<torch::Tensor> profile_weights(const std::string& snapshot, size_t k, const Config& cfg) {
  PhemaSnapshotReader r(snapshot);
  auto m = make_velocity_field(cfg.model, cfg.path, {2});
  r.load_profile(k, *m);
  return m->parameters();
}

std::vector<torch::Tensor> weights_of(const std::string& ckpt, const std::string& key) {
  CheckpointReader r(ckpt, torch::kCPU);
  auto m = make_velocity_field(r.config().model, r.config().path, r.sample_shape());
  r.load_module(key, *m);
  return m->parameters();
}

// ||a - b|| over every parameter.
double distance(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i)
    s += (a[i].to(torch::kFloat64) - b[i].to(torch::kFloat64)).pow(2).sum().item<double>();
  return std::sqrt(s);
}
double norm(const std::vector<torch::Tensor>& a) {
  double s = 0.0;
  for (const auto& t : a) s += t.to(torch::kFloat64).pow(2).sum().item<double>();
  return std::sqrt(s);
}

TEST(PhemaTrain, SnapshotsAtTheIntervalAndTheLastStepWithoutChangingTheTraining) {
  FM_SKIP_ON_CUDA("bitwise equality of two runs holds on the CPU only");
  TempDir d;
  auto cfg = toy_config(25, 10);
  cfg.train.ema_snapshots_keep = 2;
  train(cfg, {d / "on", ""});
  const auto snaps = list_phema_snapshots(d / "on/phema");
  ASSERT_EQ(snaps.size(), 2u);  // 10, 20, 25 written; the newest 2 kept
  EXPECT_EQ(snaps[0].first, 20);
  EXPECT_EQ(snaps[1].first, 25);
  // The training itself is the same bit for bit: the profiles draw nothing and change nothing the step computes.
  train(toy_config(25, 0), {d / "off", ""});
  EXPECT_FALSE(fs::exists(d / "off/phema"));
  const auto a = weights_of(d / "on/checkpoints/ckpt_000000025.pt", "model");
  const auto b = weights_of(d / "off/checkpoints/ckpt_000000025.pt", "model");
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "parameter " << i;
  // The checkpoint holds the profiles as the last snapshot does.
  struct Profiles : ArchiveState {
    std::vector<double> s;
    void save(torch::serialize::OutputArchive&) const override {}
    void load(torch::serialize::InputArchive& ar) override { s = read_sigma_rels(ar); }
  } stored;
  CheckpointReader ck(d / "on/checkpoints/ckpt_000000025.pt", torch::kCPU);
  ASSERT_TRUE(ck.load_state("phema", stored));
  EXPECT_EQ(stored.s, (std::vector<double>{0.05, 0.10}));
  CheckpointReader old(d / "off/checkpoints/ckpt_000000025.pt", torch::kCPU);
  EXPECT_FALSE(old.load_state("phema", stored));
}

TEST(PhemaTrain, AResumeKeepsTheLengthsAndCannotStartProfilesMidRun) {
  TempDir d;
  train(toy_config(20, 0), {d / "run", "", 10});
  // A checkpoint without profiles cannot grow them: their average starts at step 1.
  try {
    train(toy_config(20, 5), {d / "run", "auto"});
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("kept no post-hoc EMA profiles"), std::string::npos) << e.what();
  }
  train(toy_config(20, 5), {d / "run2", "", 10});
  try {
    train(toy_config(20, 5, {0.05, 0.15}), {d / "run2", "auto"});
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("train.phema_sigma_rels: [0.05,0.15]"), std::string::npos) << e.what();
  }
  // Turning snapshots off continues the run without them.
  EXPECT_EQ(train(toy_config(20, 0), {d / "run2", "auto"}).step, 20);
}

TEST(PhemaTrain, AResumeFromAnOlderCheckpointSetsTheAbandonedSnapshotsAside) {
  TempDir d;
  train(toy_config(30, 10), {d / "run", ""});
  train(toy_config(30, 10), {d / "run", d / "run/checkpoints/ckpt_000000010.pt"});
  const auto snaps = list_phema_snapshots(d / "run/phema");
  ASSERT_EQ(snaps.size(), 3u);
  int aside = 0;
  for (const auto& e : fs::directory_iterator(d / "run/phema"))
    if (e.is_directory() && e.path().filename().string().rfind("abandoned_", 0) == 0)
      aside += static_cast<int>(std::distance(fs::directory_iterator(e.path()), fs::directory_iterator()));
  EXPECT_EQ(aside, 2);  // steps 20 and 30 of the first branch
}

// ---- reconstruction ------------------------------------------------------------------------------------------------

TEST(PhemaReconstruct, ATrackedLengthComesBackAsItsProfileInAnOrdinaryCheckpoint) {
  TempDir d;
  const auto cfg = toy_config(60, 10);
  train(cfg, {d / "run", ""});
  PhemaReconstruction r;
  r.checkpoint = phema_checkpoint_of_run(d / "run", -1);
  EXPECT_EQ(r.checkpoint, d / "run/checkpoints/ckpt_000000060.pt");
  r.snapshot_dir = d / "run/phema";
  r.sigma_rels = {0.10, 0.05};
  r.out_dir = d / "out";
  const auto outs = reconstruct_phema(r);
  ASSERT_EQ(outs.size(), 2u);
  EXPECT_EQ(outs[0].inputs, 12);  // 6 snapshots of 2 profiles
  EXPECT_EQ(outs[0].checkpoint, d / "out/ema_0.1_000000060.pt");
  for (size_t k = 0; k < 2; ++k) {
    const auto rec = weights_of(outs[k].checkpoint, "ema");
    const auto tracked = profile_weights(d / "run/phema/phema_000000060.pt", k == 0 ? 1 : 0, cfg);
    for (size_t i = 0; i < rec.size(); ++i)
      EXPECT_TRUE(torch::allclose(rec[i], tracked[i], 1e-5, 1e-6))
          << "length " << outs[k].sigma_rel << " parameter " << i;
  }
  // An ordinary checkpoint: the template's raw weights, step and config, which sample and eval-nll load.
  const auto raw = weights_of(outs[0].checkpoint, "model");
  const auto tmpl = weights_of(r.checkpoint, "model");
  for (size_t i = 0; i < raw.size(); ++i) EXPECT_TRUE(torch::equal(raw[i], tmpl[i]));
  CheckpointReader ck(outs[0].checkpoint, torch::kCPU);
  EXPECT_EQ(ck.step(), 60);
  EXPECT_NE(load_network(ck, Weights::ema, torch::kCPU), nullptr);
  // Its record names every snapshot used, with its coefficient: here the tracked profile alone.
  nlohmann::json rec;
  std::ifstream(outs[0].record) >> rec;
  ASSERT_EQ(rec["inputs"].size(), 12u);
  EXPECT_NEAR(rec["inputs"][11]["coefficient"].get<double>(), 1.0, 1e-6);
  EXPECT_EQ(rec["inputs"][11]["step"], 60);
  EXPECT_TRUE(rec.contains("template_crc32"));
  // Existing outputs are refused before any work; --overwrite writes the same bytes again.
  auto slurp = [](const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  const std::string first = slurp(outs[0].checkpoint);
  EXPECT_THROW(reconstruct_phema(r), InputError);
  r.overwrite = true;
  reconstruct_phema(r);
  EXPECT_EQ(slurp(outs[0].checkpoint), first);
  // The reconstruction's step needs a snapshot there.
  r.checkpoint = d / "run/checkpoints/ckpt_000000060.pt";
  fs::rename(d / "run/phema/phema_000000060.pt", d / "run/phema_60.pt");
  try {
    reconstruct_phema(r);
    FAIL() << "expected an InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("no snapshot at step 60"), std::string::npos) << e.what();
  }
  EXPECT_EQ(phema_checkpoint_of_run(d / "run", -1), d / "run/checkpoints/ckpt_000000050.pt");
  r.sigma_rels = {0.3};
  EXPECT_THROW(reconstruct_phema(r), InputError);
}

TEST(PhemaReconstruct, AnUntrackedLengthFromTwoOthersIsCloseToTrackingItDirectly) {
  // Three profiles tracked directly; the middle one reconstructed from the snapshots of the other two alone.
  TempDir d;
  const auto cfg = toy_config(300, 10, {0.05, 0.075, 0.10});
  train(cfg, {d / "run", ""});
  PhemaReconstruction r;
  r.checkpoint = d / "run/checkpoints/ckpt_000000300.pt";
  r.snapshot_dir = d / "run/phema";
  r.sigma_rels = {0.075};
  r.input_sigma_rels = {0.05, 0.10};
  r.out_dir = d / "out";
  const auto out = reconstruct_phema(r).at(0);
  EXPECT_EQ(out.inputs, 60);
  const std::string last = d / "run/phema/phema_000000300.pt";
  const auto rec = weights_of(out.checkpoint, "ema");
  const auto p05 = profile_weights(last, 0, cfg), p075 = profile_weights(last, 1, cfg);
  const auto p10 = profile_weights(last, 2, cfg);
  std::vector<torch::Tensor> mean;
  for (size_t i = 0; i < p05.size(); ++i) mean.push_back(0.5 * (p05[i] + p10[i]));
  const double spread = distance(p05, p10);
  const double err = distance(rec, p075), naive = distance(mean, p075);
  std::printf("post-hoc EMA, sigma_rel 0.075 from 0.05 and 0.10 (30 snapshots each, 300 steps): "
              "|rec - tracked| / |tracked| = %.3g, |rec - tracked| / |p0.05 - p0.10| = %.3g; "
              "the mean of p0.05 and p0.10: %.3g of the spread\n",
              err / norm(p075), err / spread, naive / spread);
  RecordProperty("relative_error_to_weights", std::to_string(err / norm(p075)));
  RecordProperty("relative_error_to_spread", std::to_string(err / spread));
  // Measured on the CPU: about 6e-5 of the spread, where the plain mean of the two is off by about 0.09 of it.
  EXPECT_LT(err, 0.02 * spread);
  EXPECT_LT(err, 0.2 * naive);
  // Asked for a length no snapshot holds as an input: refused, naming the lengths there are.
  r.input_sigma_rels = {0.06};
  r.overwrite = true;
  EXPECT_THROW(reconstruct_phema(r), InputError);
}

// ---- the commands --------------------------------------------------------------------------------------------------

TEST(PhemaCli, EmaWritesCheckpointsThatSampleTakesAndEvaluateSweeps) {
  TempDir d;
  auto train_run = run(fm_cmd("train --config " + source_dir() + "/configs/toy2d.json --out " + d / "run" +
                              " --set device=" + device_spec() +
                              " train.steps=40 train.batch_size=64 train.ckpt_every=20 train.log_every=20"
                              " train.ema_snapshot_every=10 train.tensorboard=false sample.n=50 sample.steps=2"));
  ASSERT_EQ(train_run.code, 0) << train_run.output;
  auto ema = run(fm_cmd("ema --run-dir " + d / "run" + " --sigma-rel 0.06,0.08 --out " + d / "ema"), d);
  ASSERT_EQ(ema.code, 0) << ema.err;
  EXPECT_NE(ema.out.find("| 0.06 | "), std::string::npos) << ema.out;
  EXPECT_NE(ema.out.find("| 8 | "), std::string::npos) << ema.out;  // 4 snapshots of 2 profiles
  const std::string ckpt = d / "ema/ema_0.08_000000040.pt";
  ASSERT_TRUE(fs::exists(ckpt));
  ASSERT_TRUE(fs::exists(d / "ema/ema_0.08_000000040.json"));
  auto again = run(fm_cmd("ema --run-dir " + d / "run" + " --sigma-rel 0.08 --out " + d / "ema"), d);
  EXPECT_EQ(again.code, 2);
  EXPECT_NE(again.err.find("exists already"), std::string::npos) << again.err;
  auto sample = run(fm_cmd("sample --checkpoint " + ckpt + " -n 16 --solver euler --steps 2 --out " + d / "samples" +
                           device_flag()));
  EXPECT_EQ(sample.code, 0) << sample.output;
  auto sweep = run(fm_cmd("evaluate --checkpoint " + d / "run/checkpoints/ckpt_000000040.pt" +
                          " --ema-sweep 0.06,0.08 --num-samples 0 --nll-limit 8 --nll-batch 8 --atol 1e-3 --rtol 1e-3"
                          " --samples-dir " + d / "sweep --out " + d / "sweep.json" + device_flag()),
                   d);
  ASSERT_EQ(sweep.code, 0) << sweep.err;
  EXPECT_NE(sweep.out.find("| sigma_rel | gamma | NLL (nats) | FID | NFE |"), std::string::npos) << sweep.out;
  EXPECT_NE(sweep.out.find("| 0.06 | 13.63 | "), std::string::npos) << sweep.out;
  EXPECT_NE(sweep.out.find("| 0.08 | 9.45 | "), std::string::npos) << sweep.out;
  nlohmann::json j;
  std::ifstream(d / "sweep.json") >> j;
  ASSERT_EQ(j["sweep"].size(), 2u);
  EXPECT_TRUE(j["sweep"][1]["evaluate"].contains("nll"));
  // A rerun without --resume is refused; with it, nothing is computed again.
  auto rerun = run(fm_cmd("evaluate --checkpoint " + d / "run/checkpoints/ckpt_000000040.pt" +
                          " --ema-sweep 0.06,0.08 --num-samples 0 --samples-dir " + d / "sweep --out " +
                          d / "sweep.json"),
                   d);
  EXPECT_EQ(rerun.code, 2) << rerun.err;
}

// ---- two ranks ------------------------------------------------------------------------------------------------------

// A tiny class-conditional U-Net on 16x16 shapes, dropout 0, so that two ranks match one process row for row.
std::string write_tiny_unet_config(const TempDir& d) {
  nlohmann::json c = {
      {"seed", 3},
      {"device", "cpu"},
      {"data", {{"format", "shapes"}, {"path", "64"}, {"resolution", 16}}},
      {"model",
       {{"type", "unet"},
        {"unet",
         {{"model_channels", 32}, {"num_res_blocks", 1}, {"channel_mult", {1, 2}}, {"attention_resolutions", {8}},
          {"num_heads", 1}, {"num_head_channels", -1}, {"dropout", 0.0}, {"num_classes", 3}}}}},
      {"train",
       {{"steps", 4}, {"batch_size", 8}, {"lr", 2e-3}, {"log_every", 1}, {"ckpt_every", 2}, {"keep_last", 10},
        {"tensorboard", false}, {"ema_snapshot_every", 2}}},
      {"sample", {{"steps", 2}, {"n", 16}}},
      {"dist", {{"timeout_s", 5}}}};
  std::string path = d / "tiny.json";
  std::ofstream(path) << c.dump(2);
  return path;
}

// The sweep's table from its JSON: one seed gives a plain FID; several give each length's mean +- sd, min, with the
// number of seeds in the header.
TEST(PhemaCli, SweepTableGivesTheSeedsSpreadWhenThereAreSeveral) {
  auto sweep = [](const nlohmann::json& seeds, double sd) {
    nlohmann::json dopri5 = {{"fid", 0.365}, {"fid_std", sd > 0 ? nlohmann::json(sd) : nlohmann::json()},
                             {"fid_min", 0.348}, {"mean_nfe", 50.0}, {"seeds", seeds}};
    return nlohmann::json{{"checkpoint", "c.pt"}, {"snapshot_dir", "phema"}, {"samples_dir", "sweep"}, {"step", 2000},
                          {"sweep", {{{"sigma_rel", 0.05}, {"gamma", 16.97}, {"evaluate", {{"dopri5", dopri5}}}}}}};
  };
  const auto one = fm::ema_sweep_markdown(sweep({0}, 0));
  EXPECT_NE(one.find("| FID | NFE |"), std::string::npos) << one;
  EXPECT_NE(one.find("| 0.05 | 16.97 | - | 0.36 | 50 |"), std::string::npos) << one;
  const auto two = fm::ema_sweep_markdown(sweep({0, 1}, 0.024));
  EXPECT_NE(two.find("| FID (2 seeds: mean +- sd, min) | NFE |"), std::string::npos) << two;
  EXPECT_NE(two.find("| 0.05 | 16.97 | - | 0.36 +- 0.02, min 0.35 | 50 |"), std::string::npos) << two;
}

TEST(PhemaDist, TwoRanksKeepTheProfilesOfOneProcess) {
  FM_SKIP_ON_CUDA("the ranks run on the CPU (Gloo)");
  TempDir d;
  const auto cfg = write_tiny_unet_config(d);
  auto one = run(fm_cmd("train --config " + cfg + " --out " + d / "one"));
  ASSERT_EQ(one.code, 0) << one.output;
  auto two = torchrun(2, fm_cmd("train --config " + cfg + " --out " + d / "two"));
  ASSERT_EQ(two.code, 0) << two.output;
  const auto c = load_config(cfg, {});
  for (int step : {2, 4}) {
    const std::string name = "/phema/" + phema_snapshot_name(step);
    ASSERT_TRUE(fs::exists(d / ("two" + name))) << two.output;
    for (size_t k = 0; k < 2; ++k) {
      PhemaSnapshotReader ra(d / ("one" + name)), rb(d / ("two" + name));
      auto ma = make_velocity_field(c.model, c.path, {3, 16, 16});
      auto mb = make_velocity_field(c.model, c.path, {3, 16, 16});
      ra.load_profile(k, *ma);
      rb.load_profile(k, *mb);
      // The sums over the batch run in another order on two ranks: nearly every weight agrees to 1e-5, none by more
      // than a step of lr (Adam's normalised steps on gradients near zero).
      int64_t off = 0, total = 0;
      const auto pa = ma->parameters(), pb = mb->parameters();
      for (size_t i = 0; i < pa.size(); ++i) {
        auto diff = (pa[i] - pb[i]).abs();
        off += (diff > 1e-5).sum().item<int64_t>();
        total += diff.numel();
        EXPECT_LE(diff.max().item<double>(), 2e-3) << "step " << step << " profile " << k << " parameter " << i;
      }
      EXPECT_LT(double(off) / total, 0.01) << "step " << step << " profile " << k;
    }
  }
  // Rank 0 alone wrote them: the snapshots of both steps, nothing else (no temporary file of a second writer).
  int files = 0;
  for (const auto& e : fs::directory_iterator(d / "two/phema")) files += e.is_regular_file();
  EXPECT_EQ(files, 2);
}

}  // namespace
}  // namespace fm::test
