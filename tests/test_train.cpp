#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>

#include "config/config.h"
#include "data/shapes.h"
#include "data/toy2d.h"
#include "io/image.h"
#include "nn/velocity_field.h"
#include "sample/generate.h"
#include "checkpoint_weights.h"
#include "test_util.h"
#include "trained_toy.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/phema_snapshot.h"
#include "path/prob_path.h"
#include "train/cfm_objective.h"
#include "train/adamw.h"
#include "train/ema.h"
#include "train/grad_clip.h"
#include "train/lr_schedule.h"
#include "train/metrics_log.h"
#include "checkpoint/checkpointer.h"
#include "train/nonfinite_guard.h"
#include "util/progress.h"
#include "train/trainer.h"
#include "util/error.h"

using fm::test::TempDir;

constexpr int kShapesTestSteps = 300;

namespace {

using fm::test::checkpoint_weights;

fm::Config tiny_toy_config() {
  fm::Config c;
  c.device = fm::test::device_spec();
  c.data.path = "eight_gaussians";
  c.model.mlp.hidden = 32;
  c.model.mlp.depth = 2;
  c.train.steps = 40;
  c.train.batch_size = 64;
  c.train.warmup_steps = 5;
  c.train.decay = fm::LrDecay::cosine;
  c.train.grad_clip = 1.0;
  c.train.weight_decay = 0.01;
  c.train.log_every = 10;
  c.train.ckpt_every = 10;
  c.sample.n = 200;
  c.sample.steps = 4;
  return c;
}

}  // namespace

TEST(Train, LearningRateSchedule) {
  fm::TrainConfig c;
  c.lr = 1.0;
  c.steps = 110;
  c.warmup_steps = 10;
  c.decay = fm::LrDecay::constant;
  EXPECT_DOUBLE_EQ(fm::lr_at(c, 0), 0.1);  // linear warmup reaches lr at the last warmup step
  EXPECT_DOUBLE_EQ(fm::lr_at(c, 9), 1.0);
  EXPECT_DOUBLE_EQ(fm::lr_at(c, 100), 1.0);
  c.decay = fm::LrDecay::linear;
  c.final_lr_scale = 0.1;
  EXPECT_DOUBLE_EQ(fm::lr_at(c, 10), 1.0);
  EXPECT_NEAR(fm::lr_at(c, 109), 0.1, 1e-12);
  EXPECT_NEAR(fm::lr_at(c, 10 + 99 / 3.0), 1.0 - 0.9 / 3.0, 1e-2);
  c.decay = fm::LrDecay::cosine;
  EXPECT_NEAR(fm::lr_at(c, 10 + 99 / 2), 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 49 / 99.0)), 1e-12);
  EXPECT_NEAR(fm::lr_at(c, 109), 0.1, 1e-12);
  c.decay = fm::LrDecay::poly;
  c.decay_power = 2.0;
  c.final_lr_scale = 0.0;
  EXPECT_NEAR(fm::lr_at(c, 10 + 33), std::pow(1 - 33 / 99.0, 2.0), 1e-12);
}

TEST(Train, EmaIsAnExponentialMovingAverage) {
  torch::nn::Linear a(3, 2), b(3, 2);
  a->to(fm::test::device());
  b->to(fm::test::device());
  fm::Ema ema(*a, *b, 0.9);
  ema.reset();
  auto w0 = a->weight.detach().clone();
  { torch::NoGradGuard ng; a->weight.add_(1.0); }
  ema.update();
  EXPECT_TRUE(torch::allclose(b->weight, 0.9 * w0 + 0.1 * (w0 + 1.0)));
  ema.update();
  EXPECT_TRUE(torch::allclose(b->weight, 0.9 * (0.9 * w0 + 0.1 * (w0 + 1.0)) + 0.1 * (w0 + 1.0)));
}

namespace {

// Parameters of a small network, with gradients set from a seeded stream (so two copies see the same gradients).
std::vector<torch::Tensor> make_params(int64_t seed) {
  torch::manual_seed(seed);
  std::vector<torch::Tensor> p = {torch::randn({4, 3}), torch::randn({4}), torch::randn({2, 3, 3, 3})};
  for (auto& t : p) t.set_requires_grad(true);
  return p;
}
void set_grads(std::vector<torch::Tensor>& ps, int64_t seed) {
  torch::manual_seed(seed);
  for (auto& p : ps) p.mutable_grad() = torch::randn_like(p);
}
std::vector<torch::Tensor> clones(const std::vector<torch::Tensor>& v) {
  std::vector<torch::Tensor> out;
  for (const auto& t : v) out.push_back(t.detach().clone());
  return out;
}
bool bitwise_equal(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (!torch::equal(a[i], b[i])) return false;
  return true;
}

}  // namespace

TEST(Train, FusedAdamWMatchesLibTorchAdamW) {
  // The reference is LibTorch's own (unfused, per-tensor) AdamW; changing learning rates as a schedule would.
  auto a = make_params(1), b = make_params(1);
  fm::AdamW fused(a, {0.9, 0.99, 1e-8, 0.05});
  torch::optim::AdamW ref(b, torch::optim::AdamWOptions(1e-2).betas({0.9, 0.99}).eps(1e-8).weight_decay(0.05));
  for (int64_t k = 0; k < 6; ++k) {
    const double lr = 1e-2 * (k + 1) / 3.0;
    for (auto& g : ref.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
    set_grads(a, 100 + k);
    set_grads(b, 100 + k);
    fused.step(lr);
    ref.step();
  }
  EXPECT_EQ(fused.updates(), 6);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::allclose(a[i], b[i], 1e-5, 1e-6)) << "parameter " << i << " max diff "
                                                         << (a[i] - b[i]).abs().max().item<double>();
    EXPECT_FALSE(torch::equal(a[i], make_params(1)[i])) << "the step did nothing";
  }
}

TEST(Train, SkippedStepLeavesParametersOptimizerAndEmaUntouched) {
  torch::nn::Linear model(3, 2), avg(3, 2);
  fm::Ema ema(*model, *avg, 0.9);
  ema.reset();
  auto params = model->parameters();
  fm::AdamW opt(params, {0.9, 0.999, 1e-8, 0.01});
  fm::NonFiniteGuard guard(torch::kCPU, 3);
  auto finite_step = [&](int64_t seed) {
    set_grads(params, seed);
    auto flag = guard.check(torch::tensor(1.0f), fm::clip_grad_norm(params, 0.0));
    EXPECT_EQ(flag.item<float>(), 0.0f);
    opt.step(1e-2, flag);
    ema.update(flag);
  };
  finite_step(1);
  finite_step(2);
  auto p0 = clones(params), m0 = clones(opt.exp_avg()), v0 = clones(opt.exp_avg_sq()),
       s0 = clones(opt.step_counts()), e0 = clones(avg->parameters());
  std::stringstream saved;  // the optimizer before the skipped steps, through its archive form
  {
    torch::serialize::OutputArchive ar;
    opt.save(ar);
    ar.save_to(saved);
  }
  // A gradient with a NaN in one element, and (separately) a finite gradient with an infinite loss.
  for (int k = 0; k < 2; ++k) {
    set_grads(params, 3);
    if (k == 0) params[0].mutable_grad()[0][1].fill_(NAN);
    auto loss = torch::tensor(k == 0 ? 1.0f : INFINITY);
    auto flag = guard.check(loss, fm::clip_grad_norm(params, 0.0));
    EXPECT_EQ(flag.item<float>(), 1.0f);
    opt.step(1e-2, flag);
    ema.update(flag);
    EXPECT_TRUE(bitwise_equal(params, p0));
    EXPECT_TRUE(bitwise_equal(opt.exp_avg(), m0));
    EXPECT_TRUE(bitwise_equal(opt.exp_avg_sq(), v0));
    EXPECT_TRUE(bitwise_equal(opt.step_counts(), s0));
    EXPECT_TRUE(bitwise_equal(avg->parameters(), e0));
  }
  EXPECT_EQ(guard.take_interval_skips(), 2);
  EXPECT_EQ(guard.take_interval_skips(), 0);
  const auto reading = guard.read(4);
  EXPECT_EQ(reading.current, 2);
  EXPECT_FALSE(reading.too_long) << "2 in a row, below the limit of 3";
  // The next finite step is exactly the one taken by an optimizer that never saw the skipped steps.
  auto tp = clones(p0);
  for (auto& t : tp) t.set_requires_grad(true);
  fm::AdamW twin(tp, {0.9, 0.999, 1e-8, 0.01});
  torch::serialize::InputArchive in;
  in.load_from(saved);
  twin.load(in);
  finite_step(4);
  set_grads(tp, 4);
  twin.step(1e-2);
  EXPECT_TRUE(bitwise_equal(params, tp));
  EXPECT_FALSE(bitwise_equal(params, p0));
  EXPECT_EQ(opt.updates(), 3);
}

TEST(Train, GuardKeepsTheLongestRunOfSkipsBetweenReads) {
  fm::NonFiniteGuard guard(torch::kCPU, 3);
  auto g = torch::tensor(1.0f), bad = torch::tensor(NAN);
  guard.check(bad, g);
  guard.check(bad, g);
  guard.check(g, g);  // a finite step ends the run of skips
  guard.check(bad, g);
  guard.check(g, bad);
  auto r = guard.read(5);
  EXPECT_EQ(r.current, 2);
  EXPECT_FALSE(r.too_long);
  EXPECT_FALSE(guard.due(5));
  EXPECT_TRUE(guard.due(6)) << "the run under way can reach 3 at the next step";
  guard.check(bad, g);
  r = guard.read(6);
  ASSERT_TRUE(r.too_long) << "three skipped steps in a row";
  EXPECT_EQ(r.too_long->first, 4);
  EXPECT_EQ(r.too_long->last, 6);
  // A run that reached the limit and ended before the next read is still seen.
  for (int i = 0; i < 4; ++i) guard.check(bad, g);
  guard.check(g, g);
  r = guard.read(11);
  EXPECT_EQ(r.current, 0);
  ASSERT_TRUE(r.too_long);
  EXPECT_EQ(r.too_long->first, 4);  // the run under way at the last read, from 4, went on to 10
  EXPECT_EQ(r.too_long->last, 10);
  EXPECT_FALSE(guard.read(12).too_long) << "a read starts the next interval";
  EXPECT_TRUE(fm::all_finite({torch::ones({3}), torch::zeros({0})}));
  EXPECT_FALSE(fm::all_finite({torch::ones({3}), torch::tensor({1.0f, -INFINITY})}));
  EXPECT_FALSE(fm::all_finite({torch::tensor({NAN})}));
}

TEST(Train, MetricsLogStartsFreshOrKeepsTheLinesUpToTheCheckpoint) {
  TempDir d;
  const std::string path = d / "metrics.jsonl";
  auto write_stale = [&] {
    std::ofstream f(path);
    f << R"({"step": 10, "elapsed_s": 5.0})" "\n" R"({"step": 20, "elapsed_s": 9.0})" "\n"
      << R"({"step": 30, "elapsed_s": 12.0})" "\n" R"({"step": 40, "ela)";  // the last line cut by a kill
  };
  auto read_steps = [&] {
    std::ifstream f(path);
    std::vector<int64_t> steps;
    for (std::string line; std::getline(f, line);) steps.push_back(nlohmann::json::parse(line)["step"]);
    return steps;
  };
  write_stale();
  {
    fm::MetricsLog log(path, 20);
    EXPECT_DOUBLE_EQ(log.elapsed_before(), 9.0);
    log.write({{"step", 30}});
  }
  EXPECT_EQ(read_steps(), (std::vector<int64_t>{10, 20, 30}));
  write_stale();
  {
    fm::MetricsLog log(path, std::nullopt);  // a fresh run: nothing of the stale file survives
    EXPECT_DOUBLE_EQ(log.elapsed_before(), 0.0);
    log.write({{"step", 10}});
  }
  EXPECT_EQ(read_steps(), (std::vector<int64_t>{10}));
}

TEST(Train, ResumeIsBitwiseExact) {
  FM_SKIP_ON_CUDA("bitwise equality holds on the CPU only: CUDA kernels (atomic adds in backward) sum in any order");
  TempDir d;
  auto cfg = tiny_toy_config();
  fm::train(cfg, {d / "straight", ""});
  // The same run interrupted at step 20 (a checkpoint), then resumed.
  auto first = fm::train(cfg, {d / "resumed", "", 20});
  EXPECT_EQ(first.step, 20);
  auto second = fm::train(cfg, {d / "resumed", "auto"});
  EXPECT_EQ(second.step, 40);
  for (const char* key : {"model", "ema"}) {
    auto a = checkpoint_weights(d / "straight/checkpoints/ckpt_000000040.pt", key);
    auto b = checkpoint_weights(d / "resumed/checkpoints/ckpt_000000040.pt", key);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << key << " parameter " << i;
  }
  // And it did learn something: the checkpoint differs from step 20.
  auto mid = checkpoint_weights(d / "resumed/checkpoints/ckpt_000000020.pt", "model");
  EXPECT_FALSE(torch::equal(mid[0], checkpoint_weights(d / "resumed/checkpoints/ckpt_000000040.pt", "model")[0]));
  // Metrics of the resumed run continue where the first part stopped, without duplicates.
  std::ifstream m(d / "resumed/metrics.jsonl");
  std::vector<int64_t> steps;
  std::vector<double> elapsed;
  for (std::string line; std::getline(m, line);) {
    auto j = nlohmann::json::parse(line);
    steps.push_back(j["step"].get<int64_t>());
    elapsed.push_back(j["elapsed_s"].get<double>());
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{10, 20, 30, 40}));
  // elapsed_s goes on from the first part's figure rather than restarting at zero.
  ASSERT_EQ(elapsed.size(), 4u);
  EXPECT_GE(elapsed[2], elapsed[1]);
}

TEST(Train, PostHocEmaResumeIsBitwiseExact) {
  FM_SKIP_ON_CUDA("bitwise equality holds on the CPU only: CUDA kernels (atomic adds in backward) sum in any order");
  TempDir d;
  auto cfg = tiny_toy_config();
  cfg.train.ema_snapshot_every = 10;
  cfg.train.phema_sigma_rels = {0.05, 0.1, 0.2};
  fm::train(cfg, {d / "straight", ""});
  fm::train(cfg, {d / "resumed", "", 20});
  fm::train(cfg, {d / "resumed", "auto"});
  // Every snapshot, before and after the resume, holds the straight run's profiles bit for bit.
  for (int step : {10, 20, 30, 40}) {
    for (size_t k = 0; k < 3; ++k) {
      auto profile = [&](const std::string& run) {
        char name[32];
        std::snprintf(name, sizeof name, "/phema/phema_%09d.pt", step);
        fm::PhemaSnapshotReader r(run + name);
        auto m = fm::make_velocity_field(cfg.model, cfg.path, {2});
        r.load_profile(k, *m);
        return m->parameters();
      };
      auto a = profile(d / "straight"), b = profile(d / "resumed");
      for (size_t i = 0; i < a.size(); ++i)
        EXPECT_TRUE(torch::equal(a[i], b[i])) << "step " << step << " profile " << k << " parameter " << i;
    }
  }
  // The profiles moved: the step-40 snapshot differs from the step-20 one.
  fm::PhemaSnapshotReader r20(d / "resumed/phema/phema_000000020.pt"), r40(d / "resumed/phema/phema_000000040.pt");
  auto m20 = fm::make_velocity_field(cfg.model, cfg.path, {2}), m40 = fm::make_velocity_field(cfg.model, cfg.path, {2});
  r20.load_profile(0, *m20);
  r40.load_profile(0, *m40);
  EXPECT_FALSE(torch::equal(m20->parameters()[0], m40->parameters()[0]));
}

TEST(Train, FreshRunRestartsAStaleMetricsFile) {
  TempDir d;
  auto cfg = tiny_toy_config();
  cfg.train.steps = 20;
  std::filesystem::create_directories(d / "run");
  { std::ofstream(d / "run/metrics.jsonl") << R"({"step": 100, "loss": 1.0})" "\n"; }
  fm::train(cfg, {d / "run", ""});
  std::ifstream m(d / "run/metrics.jsonl");
  std::vector<int64_t> steps;
  for (std::string line; std::getline(m, line);) {
    auto j = nlohmann::json::parse(line);
    steps.push_back(j["step"].get<int64_t>());
    EXPECT_EQ(j["skipped_steps"], 0);
    EXPECT_EQ(j["skipped_steps_total"], 0);
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{10, 20}));
}

TEST(Train, KeepsOnlyTheLastCheckpointsAndWritesTheConfig) {
  TempDir d;
  auto cfg = tiny_toy_config();
  cfg.train.keep_last = 2;
  fm::train(cfg, {d.str(), ""});
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(d / "checkpoints")) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"ckpt_000000030.pt", "ckpt_000000040.pt"}));
  std::ifstream f(d / "config.json");
  EXPECT_EQ(fm::to_json(fm::config_from_json(nlohmann::json::parse(f), "config.json")), fm::to_json(cfg));
  EXPECT_TRUE(std::filesystem::exists(d / "samples.png"));
  EXPECT_TRUE(std::filesystem::exists(d / "trajectories.png"));
}

TEST(Train, RefusesToOverwriteAnExistingRun) {
  TempDir d;
  auto cfg = tiny_toy_config();
  cfg.train.steps = 10;
  fm::train(cfg, {d.str(), ""});
  auto before = std::filesystem::last_write_time(d / "checkpoints/ckpt_000000010.pt");
  EXPECT_THROW(fm::train(cfg, {d.str(), ""}), fm::InputError);
  EXPECT_EQ(std::filesystem::last_write_time(d / "checkpoints/ckpt_000000010.pt"), before);
  // Resuming a run whose model differs is refused too.
  cfg.model.mlp.hidden = 16;
  EXPECT_THROW(fm::train(cfg, {d.str(), "auto"}), fm::InputError);
}

TEST(Train, CheckerboardDemoLearnsTheBoard) {
  // The demo recipe: most samples must land on the filled squares (an untrained model puts about half there, as the
  // check on the initial weights below shows).
  auto ckpt_path = fm::test::trained_toy2d_checkpoint();
  auto frac = [&](const std::string& key) {
    fm::CheckpointReader ck(ckpt_path, fm::test::device());
    auto m = fm::make_velocity_field(ck.config().model, ck.sample_shape());
    if (!key.empty()) ck.load_module(key, *m);
    m->to(fm::test::device());
    torch::manual_seed(123);
    auto x0 = torch::randn({4000, 2}).to(fm::test::device());
    auto x = fm::generate(*m, x0, {}, fm::solve_settings(ck.config().sample)).x;
    return fm::on_checkerboard(x).to(torch::kFloat64).mean().item<double>();
  };
  double trained = frac("ema"), untrained = frac("");
  RecordProperty("on_board_fraction", std::to_string(trained));
  EXPECT_GT(trained, 0.9);
  EXPECT_LT(untrained, 0.7);
}

namespace {

fm::Config tiny_image_config() {
  fm::Config c;
  c.device = fm::test::device_spec();
  c.data.format = fm::DataFormat::shapes;
  c.data.path = "64";
  c.data.resolution = 16;
  c.model.type = fm::ModelType::unet;
  c.model.unet = fm::test::tiny_unet({1, 2});
  c.model.unet.attention_resolutions = {8};
  c.model.unet.dropout = 0.1;  // exercises the RNG stream across a resume
  c.train.batch_size = 8;
  c.train.lr = 2e-3;
  c.train.log_every = 2;
  c.train.ckpt_every = 1000;
  c.sample.steps = 2;
  return c;
}

}  // namespace

TEST(Train, ImageResumeIsBitwiseExact) {
  FM_SKIP_ON_CUDA("bitwise equality holds on the CPU only: CUDA kernels (atomic adds in backward) sum in any order");
  TempDir d;
  auto cfg = tiny_image_config();
  cfg.train.steps = 6;
  fm::train(cfg, {d / "straight", ""});
  fm::train(cfg, {d / "resumed", "", 3});
  fm::train(cfg, {d / "resumed", "auto"});
  auto a = checkpoint_weights(d / "straight/checkpoints/ckpt_000000006.pt", "model");
  auto b = checkpoint_weights(d / "resumed/checkpoints/ckpt_000000006.pt", "model");
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i])) << "parameter " << i;
  EXPECT_TRUE(std::filesystem::exists(d / "resumed/samples.png"));
}

TEST(Train, TinyUNetLowersItsLossOnShapes) {
  TempDir d;
  auto cfg = tiny_image_config();
  cfg.model.unet.dropout = 0.0;
  cfg.train.steps = 60;
  cfg.train.batch_size = 16;
  cfg.train.log_every = 10;
  fm::train(cfg, {d.str(), ""});
  std::ifstream m(d / "metrics.jsonl");
  std::vector<double> loss;
  for (std::string line; std::getline(m, line);) loss.push_back(nlohmann::json::parse(line)["loss"].get<double>());
  ASSERT_EQ(loss.size(), 6u);
  // The flow matching loss starts near E|x1 - x0|^2 / D (about 1 + the pixel variance) and must fall clearly.
  EXPECT_LT(loss.back(), 0.8 * loss.front()) << "first " << loss.front() << " last " << loss.back();
}

TEST(Train, ShapesDemoRecipeLearnsTwoColourImages) {
  // The README's image demo, shortened: a few hundred steps must already turn noise into flat-coloured objects on flat
  // backgrounds, which the untrained network (zero velocity at initialisation: its samples are the noise) lacks.
  // The raw weights are scored: the demo's slow EMA still remembers the first steps this early. Measured: trained
  // about 0.74, untrained about 0.006; the full 2000-step demo scores about 0.97 and the data 1.
  TempDir d;
  auto cfg = fm::load_config(fm::test::source_dir() + "/configs/shapes_cpu.json",
                             {"device=" + fm::test::device_spec(), "train.steps=" + std::to_string(kShapesTestSteps),
                              "train.sample_every=0"});
  auto ckpt = fm::train(cfg, {d / "run", ""}).checkpoint;
  auto score = [&](const std::string& key) {
    fm::CheckpointReader ck(ckpt, fm::test::device());
    auto m = fm::make_velocity_field(ck.config().model, ck.sample_shape());
    if (!key.empty()) ck.load_module(key, *m);
    m->to(fm::test::device());
    auto shape = ck.sample_shape();
    shape.insert(shape.begin(), 60);
    torch::manual_seed(5);
    auto x0 = torch::randn(shape).to(fm::test::device());  // the CPU's draw on any device: the same noise
    auto labels = torch::arange(60, fm::test::opts(torch::kLong)) % m->num_classes();
    auto x = fm::generate(*m, x0, labels, fm::solve_settings(ck.config().sample)).x;
    return fm::two_colour_fraction(fm::to_uint8(x)).mean().item<double>();
  };
  double trained = score("model"), untrained = score("");
  RecordProperty("two_colour_fraction_trained", std::to_string(trained));
  RecordProperty("two_colour_fraction_untrained", std::to_string(untrained));
  EXPECT_GT(trained, 0.5);
  EXPECT_LT(untrained, 0.1);
}

TEST(Train, ProgressPrintsPlainLinesInBatchLogs) {
  // Under capture stderr is not a terminal: one line per `every` items plus the last, and finishing does not repeat
  // the last line without its figures.
  testing::internal::CaptureStderr();
  {
    fm::Progress p("work", 10, 0, 4);
    for (int64_t i = 1; i <= 10; ++i) p.update(i, "loss " + std::to_string(i));
    p.finish();
  }
  auto out = testing::internal::GetCapturedStderr();
  std::vector<std::string> lines;
  std::istringstream in(out);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 3u) << out;
  EXPECT_EQ(lines[0].rfind("work 4/10 (40%) loss 4 elapsed ", 0), 0u) << lines[0];
  EXPECT_EQ(lines[1].rfind("work 8/10 (80%) loss 8 ", 0), 0u) << lines[1];
  EXPECT_EQ(lines[2].rfind("work 10/10 (100%) loss 10 ", 0), 0u) << lines[2];
}

namespace {

// Captures what the default logger writes while it lives, so tests can read the warnings a run gives.
class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(256)) {
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  ~LogCapture() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  std::string text() const {
    std::string s;
    for (const auto& line : sink_->last_formatted()) s += line;
    return s;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const fm::InputError& e) {
    return e.what();
  }
  return "(no InputError)";
}

}  // namespace

TEST(Train, ResumeBelowTheCheckpointsStepIsRefused) {
  TempDir d;
  auto cfg = tiny_toy_config();
  cfg.train.steps = 20;
  fm::train(cfg, {d.str(), ""});
  auto before = std::filesystem::last_write_time(d / "config.json");
  cfg.train.steps = 10;
  auto msg = error_of([&] { fm::train(cfg, {d.str(), "auto"}); });
  EXPECT_NE(msg.find("train.steps: 10 is below the step of " + d / "checkpoints/ckpt_000000020.pt" + " (20)"),
            std::string::npos)
      << msg;
  EXPECT_EQ(std::filesystem::last_write_time(d / "config.json"), before);  // nothing rewritten
}

// What the network learns is part of a run: a resume with another path, coupling, time sampler or target is refused
// naming each key, unless train.resume_new_objective asks for it.
TEST(Train, AResumeWithAnotherObjectiveIsRefusedNamingTheKeys) {
  TempDir d;
  auto cfg = tiny_toy_config();
  cfg.train.steps = 10;
  fm::train(cfg, {d.str(), ""});
  cfg.train.steps = 20;
  auto changed = cfg;
  changed.path.type = fm::PathType::vp;
  changed.time.sampler = fm::TimeSampler::logit_normal;
  auto msg = error_of([&] { fm::train(changed, {d.str(), "auto"}); });
  EXPECT_NE(msg.find("another objective"), std::string::npos) << msg;
  EXPECT_NE(msg.find("path.type: \"cond_ot\" in the checkpoint, \"vp\" here"), std::string::npos) << msg;
  EXPECT_NE(msg.find("time.sampler"), std::string::npos) << msg;
  EXPECT_NE(msg.find("train.resume_new_objective"), std::string::npos) << msg;
  changed = cfg;
  changed.path.sigma_min = 0.01;
  EXPECT_NE(error_of([&] { fm::train(changed, {d.str(), "auto"}); }).find("path.sigma_min"), std::string::npos);
  changed = cfg;
  changed.model.target = fm::Target::noise;
  EXPECT_NE(error_of([&] { fm::train(changed, {d.str(), "auto"}); }).find("model.target"), std::string::npos);
  changed = cfg;
  changed.path.beta_max = 5.0;  // a VP key, which a CondOT run does not read
  changed.train.resume_new_data = true;
  EXPECT_EQ(fm::train(changed, {d.str(), "auto"}).step, 20);
  changed.train.steps = 30;
  changed.path.coupling = fm::Coupling::ot;
  changed.train.resume_new_objective = true;
  EXPECT_EQ(fm::train(changed, {d.str(), "auto"}).step, 30);
}

// --resume auto of a run that has reached its last step trains nothing and touches nothing: no figures redrawn, no
// TensorBoard file added.
TEST(Train, ResumingAFinishedRunIsANoOp) {
  TempDir d;
  auto cfg = tiny_toy_config();
  cfg.train.steps = 10;
  fm::train(cfg, {d.str(), ""});
  auto count_events = [&] {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator(d.str()))
      n += e.path().filename().string().rfind("events.out.tfevents", 0) == 0;
    return n;
  };
  const int events = count_events();
  const auto samples = std::filesystem::last_write_time(d / "samples.png");
  const auto metrics = std::filesystem::last_write_time(d / "metrics.jsonl");
  auto r = fm::train(cfg, {d.str(), "auto"});
  EXPECT_FALSE(r.trained);
  EXPECT_EQ(r.step, 10);
  EXPECT_EQ(r.checkpoint, d / "checkpoints/ckpt_000000010.pt");
  EXPECT_EQ(count_events(), events);
  EXPECT_EQ(std::filesystem::last_write_time(d / "samples.png"), samples);
  EXPECT_EQ(std::filesystem::last_write_time(d / "metrics.jsonl"), metrics);
}

// skipped_steps_total counts skipped steps: an imported checkpoint, whose optimizer starts fresh at its step, has
// skipped none.
TEST(Train, SkippedStepsTotalCountsSkipsAcrossAnImport) {
  TempDir d;
  auto cfg = tiny_toy_config();
  cfg.train.steps = 20;
  const auto ckpt = fm::train(cfg, {d / "run", ""}).checkpoint;
  auto r = fm::test::run(fm::test::fm_cmd("export --checkpoint " + ckpt + " --out " + d / "m.safetensors"));
  ASSERT_EQ(r.code, 0) << r.output;
  r = fm::test::run(fm::test::fm_cmd("import --from fm --weights " + d / "m.safetensors" + " --out " +
                                     d / "resumed/checkpoints/ckpt_000000020.pt"));
  ASSERT_EQ(r.code, 0) << r.output;
  cfg.train.steps = 40;
  fm::train(cfg, {d / "resumed", "auto"});
  std::ifstream m(d / "resumed/metrics.jsonl");
  int lines = 0;
  for (std::string line; std::getline(m, line); ++lines)
    EXPECT_EQ(nlohmann::json::parse(line)["skipped_steps_total"], 0) << line;
  EXPECT_EQ(lines, 2);
}

// One writer per run directory: a second training into it is refused while the first runs, naming its pid; the
// kernel drops the lock with the process, so a run killed with SIGKILL leaves none behind.
TEST(Train, ASecondRunIntoTheSameOutIsRefusedWhileTheFirstRuns) {
  TempDir d;
  const std::string train = fm::test::fm_binary() + " train --config " + fm::test::source_dir() +
                            "/configs/toy2d.json --out " + d / "run" + " --set device=cpu model.mlp.hidden=16 " +
                            "train.batch_size=16 train.log_every=1 ";
  auto r = fm::test::run("cd " + d.str() + "; " + train + "train.steps=1000000 train.ckpt_every=1000000 > a.log 2>&1 "
                         "& pid=$!; for i in $(seq 600); do [ -s run/metrics.jsonl ] && break; sleep 0.1; done; " +
                         train + "train.steps=5 > b.log 2>&1; echo second=$?; " + train +
                         "train.steps=5 --resume auto > c.log 2>&1; echo resumed=$?; kill -9 $pid; wait $pid; " +
                         train + "train.steps=5 train.ckpt_every=5 > d.log 2>&1; echo after=$?; echo pid=$pid; " +
                         "cat b.log c.log");
  EXPECT_NE(r.output.find("second=2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("resumed=2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("after=0"), std::string::npos) << r.output;
  const auto at = r.output.find("pid=");
  ASSERT_NE(at, std::string::npos);
  const std::string pid = r.output.substr(at + 4, r.output.find('\n', at) - at - 4);
  EXPECT_NE(r.output.find("in use by another fm (pid " + pid + " on host "), std::string::npos) << r.output;
}

TEST(Train, RaisingTheStepsOnResumeIsLoggedAndRecorded) {
  TempDir d;
  auto cfg = tiny_toy_config();  // cosine decay over train.steps
  cfg.train.steps = 20;
  fm::train(cfg, {d.str(), ""});
  cfg.train.steps = 30;
  LogCapture log;
  auto r = fm::train(cfg, {d.str(), "auto"});
  EXPECT_EQ(r.step, 30);
  fm::TrainConfig old_schedule = cfg.train, new_schedule = cfg.train;
  old_schedule.steps = 20;
  char lrs[80];
  std::snprintf(lrs, sizeof lrs, "lr %.3e -> %.3e", fm::lr_at(old_schedule, 20), fm::lr_at(new_schedule, 20));
  EXPECT_NE(log.text().find("train.steps changed from 20 (checkpoint) to 30 at step 20"), std::string::npos)
      << log.text();
  EXPECT_NE(log.text().find(lrs), std::string::npos) << log.text();
  auto recorded = [&] {
    std::ifstream f(d / "config.json");
    return nlohmann::json::parse(f)["train"]["earlier_steps"].get<std::vector<int64_t>>();
  };
  EXPECT_EQ(recorded(), (std::vector<int64_t>{20}));
  cfg.train.steps = 40;
  fm::train(cfg, {d.str(), "auto"});
  EXPECT_EQ(recorded(), (std::vector<int64_t>{20, 30}));
  fm::CheckpointReader ck(d / "checkpoints/ckpt_000000040.pt", torch::kCPU);
  EXPECT_EQ(ck.config().train.earlier_steps, (std::vector<int64_t>{20, 30}));
}

TEST(Train, AModelMismatchOnResumeNamesTheKeys) {
  TempDir d;
  auto cfg = tiny_toy_config();
  cfg.train.steps = 10;
  fm::train(cfg, {d.str(), ""});
  cfg.model.mlp.hidden = 64;
  cfg.model.mlp.depth = 3;
  auto msg = error_of([&] { fm::train(cfg, {d.str(), "auto"}); });
  EXPECT_NE(msg.find("model.mlp.hidden: 32 in the checkpoint, 64 here"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.mlp.depth: 2 in the checkpoint, 3 here"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("unet"), std::string::npos) << msg;  // keys of the other model type do not matter
}

TEST(Train, ResumingFromAnOlderCheckpointMovesTheAbandonedBranchAside) {
  TempDir d;
  auto cfg = tiny_toy_config();
  cfg.train.steps = 30;
  fm::train(cfg, {d.str(), ""});
  LogCapture log;
  fm::train(cfg, {d.str(), d / "checkpoints/ckpt_000000010.pt", 20});
  auto kept = fm::list_checkpoints(d / "checkpoints");
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(kept[0].first, 10);
  EXPECT_EQ(kept[1].first, 20);
  std::vector<std::string> aside;
  for (const auto& e : std::filesystem::directory_iterator(d / "checkpoints"))
    if (e.is_directory())
      for (const auto& f : std::filesystem::directory_iterator(e.path())) aside.push_back(f.path().string());
  std::sort(aside.begin(), aside.end());
  ASSERT_EQ(aside.size(), 2u);
  EXPECT_NE(aside[0].find("/checkpoints/abandoned_"), std::string::npos) << aside[0];
  EXPECT_NE(aside[0].find("ckpt_000000020.pt"), std::string::npos);
  EXPECT_NE(aside[1].find("ckpt_000000030.pt"), std::string::npos);
  for (const auto& p : aside) EXPECT_NE(log.text().find("moved it to " + p), std::string::npos) << log.text();
  // --resume auto now continues the new branch, from step 20, not the abandoned step 30.
  LogCapture log2;
  EXPECT_EQ(fm::train(cfg, {d.str(), "auto"}).step, 30);
  EXPECT_NE(log2.text().find("resumed from " + d / "checkpoints/ckpt_000000020.pt"), std::string::npos)
      << log2.text();
}

TEST(Train, ResumingOnOtherDataIsRefusedUnlessAskedThenStartsAFreshEpoch) {
  TempDir d;
  auto cfg = tiny_image_config();
  cfg.model.unet.num_classes = 3;
  cfg.train.steps = 6;
  fm::train(cfg, {d.str(), "", 3});  // the sampler is part-way through an epoch of 64 images
  cfg.data.path = "32";
  auto msg = error_of([&] { fm::train(cfg, {d.str(), "auto"}); });
  EXPECT_NE(msg.find("other data than this run's"), std::string::npos) << msg;
  EXPECT_NE(msg.find("data.path: \"64\" in the checkpoint, \"32\" here"), std::string::npos) << msg;
  EXPECT_NE(msg.find("images: 64 in the checkpoint, 32 here"), std::string::npos) << msg;
  EXPECT_NE(msg.find("train.resume_new_data=true"), std::string::npos) << msg;
  // Asked to, it continues on the 32 images; the old order would index images 32..63 that are not there.
  cfg.train.resume_new_data = true;
  LogCapture log;
  EXPECT_EQ(fm::train(cfg, {d.str(), "auto"}).step, 6);
  EXPECT_NE(log.text().find("the batch sampler starts a fresh epoch"), std::string::npos) << log.text();
  // Only the flips changed: that is the same data.
  cfg.data.hflip = false;
  cfg.train.resume_new_data = false;
  cfg.train.steps = 7;
  EXPECT_EQ(fm::train(cfg, {d.str(), "auto"}).step, 7);
}

TEST(Train, DataWithMoreClassesThanTheModelIsRefusedAndLeavesNoCheckpointsDirectory) {
  TempDir d;
  auto cfg = tiny_image_config();  // shapes: 3 classes, labels 0..2
  cfg.model.unet.num_classes = 2;  // label 2 would silently train the null label
  cfg.train.steps = 2;
  auto msg = error_of([&] { fm::train(cfg, {d / "run", ""}); });
  EXPECT_NE(msg.find("model.unet.num_classes: 2, but shapes:64 has 3 classes (labels up to 2"), std::string::npos)
      << msg;
  EXPECT_FALSE(std::filesystem::exists(d / "run/checkpoints"));
  // Bad data found while loading leaves nothing behind either.
  cfg.data.format = fm::DataFormat::npz;
  cfg.data.path = d / "missing.npz";
  EXPECT_THROW(fm::train(cfg, {d / "run", ""}), fm::InputError);
  EXPECT_FALSE(std::filesystem::exists(d / "run/checkpoints"));
}

// --- the objective: couplings and prediction targets, trained end to end on Gaussian-to-Gaussian problems ---------

namespace {

// Trains a small MLP with CfmObjective on x1 ~ N(mean, diag(scale^2)) (2-D) from N(0, I) noise. Returns the model as a
// velocity field (TargetVelocity for targets other than velocity).
std::shared_ptr<fm::VelocityField> train_gaussian(fm::Config cfg, const std::vector<double>& mean,
                                                  const std::vector<double>& scale, int64_t steps) {
  torch::manual_seed(cfg.seed);
  cfg.model.mlp.hidden = 64;
  cfg.model.mlp.depth = 2;
  auto model = fm::make_velocity_field(cfg.model, cfg.path, {2});
  auto path = fm::make_path(cfg.path);
  fm::CfmObjective objective(cfg.path, cfg.time, cfg.model.target, *path, fm::conditioning_of(cfg.model));
  torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(3e-3));
  auto m = torch::tensor(mean, torch::kFloat32), s = torch::tensor(scale, torch::kFloat32);
  for (int64_t i = 0; i < steps; ++i) {
    if (i == steps * 3 / 4)
      for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamOptions&>(g.options()).lr(5e-4);
    fm::Batch b{m + s * torch::randn({cfg.train.batch_size, 2}), {}};
    auto loss = objective.loss(b, [&](const auto& t, const auto& x, const auto& y) { return model->prediction(t, x, y); });
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  model->eval();
  return model;
}

}  // namespace

TEST(Train, OTCouplingLearnsTheStraightMapSoOneEulerStepLandsOnIt) {
  // Between N(0, I) and N(m, diag(s^2)) the OT map is x -> m + s x, and OT-CFM learns the straight flow along it:
  // v(0, x) = m + (s - 1) x. Independent coupling learns v(0, x) = E[x1] - x = m - x instead, so one Euler step from
  // x0 lands every point on m: mean squared error sum(s^2) = 4.25 against the OT map.
  const std::vector<double> mean{2.0, -1.0}, scale{2.0, 0.5};
  auto err_one_euler_step = [&](fm::Coupling coupling) {
    fm::Config cfg;
    cfg.seed = 11;
    cfg.train.batch_size = 256;
    cfg.path.coupling = coupling;
    auto model = train_gaussian(cfg, mean, scale, 1500);
    torch::NoGradGuard ng;
    auto x0 = torch::randn({4000, 2});
    auto x1 = x0 + (*model)(torch::zeros({4000}), x0);
    auto exact = torch::tensor(mean, torch::kFloat32) + torch::tensor(scale, torch::kFloat32) * x0;
    return (x1 - exact).pow(2).sum(1).mean().item<double>();
  };
  const double ot = err_one_euler_step(fm::Coupling::ot), independent = err_one_euler_step(fm::Coupling::independent);
  std::printf("one Euler step, mean squared error against the OT map: ot %.4f, independent %.4f\n", ot, independent);
  EXPECT_LT(ot, 0.1);
  EXPECT_GT(independent, 2.0);
}

TEST(Train, EveryPredictionTargetLearnsTheExactVelocity) {
  // x1 ~ N(m, s^2 I), independent coupling: x_t ~ N(alpha m, (alpha^2 s^2 + sigma^2) I) and the marginal velocity is
  // alpha' E[x1 | x_t] + sigma' E[x0 | x_t] with E[x1 | x_t] = m + alpha s^2 (x_t - alpha m) / var and
  // E[x0 | x_t] = sigma (x_t - alpha m) / var. Each target, converted to a velocity, must match it.
  const double mv = 1.5, sv = 0.5;
  for (fm::Target target : {fm::Target::velocity, fm::Target::noise, fm::Target::data, fm::Target::score}) {
    fm::Config cfg;
    cfg.seed = 12;
    cfg.train.batch_size = 256;
    cfg.path.type = fm::PathType::cosine;
    cfg.model.target = target;
    auto model = train_gaussian(cfg, {mv, mv}, {sv, sv}, 1500);
    auto path = fm::make_path(cfg.path);
    torch::NoGradGuard ng;
    const int64_t n = 4000;
    auto t = 0.1 + 0.8 * torch::rand({n});
    auto tc = t.unsqueeze(1);
    auto a = path->alpha(tc), s = path->sigma(tc), da = path->d_alpha(tc), ds = path->d_sigma(tc);
    auto var = a * a * sv * sv + s * s;
    auto x = a * mv + torch::sqrt(var) * torch::randn({n, 2});
    auto exact = da * (mv + a * sv * sv * (x - a * mv) / var) + ds * s * (x - a * mv) / var;
    auto v = (*model)(t, x);
    double rel = ((v - exact).pow(2).sum() / exact.pow(2).sum()).item<double>();
    std::printf("target %s: relative squared error of the velocity %.4f\n", fm::name_of(target), rel);
    EXPECT_LT(rel, 0.01) << target;
  }
}
