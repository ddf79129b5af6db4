#include <csignal>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

#include <unistd.h>

#include <gtest/gtest.h>

#include "data/dataset.h"
#include "io/npy.h"
#include "checkpoint/checkpoint.h"
#include "sample/figures.h"
#include "sample/graphed_velocity.h"
#include "sample/sample_run.h"
#include "sample/sde.h"
#include "sample/sliced_wasserstein.h"
#include "sample/toy_metrics.h"
#include "data/toy2d.h"
#include "io/run_lock.h"
#include "sample/straightness.h"
#include "test_util.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/preemption.h"

using fm::test::TempDir;

namespace {

std::string tiny_toy_checkpoint(const TempDir& d, const std::string& run = "run", int64_t steps = 5) {
  fm::Config c;
  c.device = fm::test::device_spec();
  c.model.mlp.hidden = 16;
  c.model.mlp.depth = 2;
  c.train.steps = steps;
  c.train.batch_size = 32;
  c.sample.n = 50;
  c.sample.steps = 2;
  return fm::train(c, {d / run, ""}).checkpoint;
}

fm::SampleOptions options(const std::string& ckpt, const std::string& out, int64_t batch) {
  fm::SampleOptions o;
  o.checkpoint = ckpt;
  o.out_dir = out;
  o.device = fm::test::device_spec();
  o.n = 300;
  o.batch = batch;
  o.seed = 7;
  o.solve.solver = fm::Solver::heun;
  o.solve.steps = 5;
  return o;
}

// The message of the InputError `f` throws ("" if none).
template <class F>
std::string input_error(F f) {
  try {
    f();
  } catch (const fm::InputError& e) {
    return e.what();
  }
  return "";
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  return nlohmann::json::parse(f);
}

// A run stopped by a signal after its first batch, as a preempted job is: the handler only sets the flag, the loop
// finishes the batch, keeps its shard and throws StopRequested.
void preempted_run(const fm::SampleOptions& o) {
  fm::install_stop_handlers();
  std::raise(SIGUSR1);
  try {
    fm::run_sampling(o);
    ADD_FAILURE() << "the run did not stop";
  } catch (const fm::StopRequested& e) {
    EXPECT_EQ(e.signal, SIGUSR1);
    EXPECT_TRUE(e.state_saved);
  }
  fm::reset_stop_request();
}

// A small class-conditional U-Net on the shapes set (3 classes), trained for a few steps.
std::string shapes_unet_checkpoint(const TempDir& d, const std::string& run, double class_dropout) {
  fm::Config c;
  c.device = fm::test::device_spec();
  c.data = fm::parse_data_spec("shapes:48");
  c.data.resolution = 16;
  c.model.type = fm::ModelType::unet;
  c.model.unet = fm::test::tiny_unet({1, 2});
  c.model.unet.num_classes = 3;
  c.model.unet.class_dropout = class_dropout;
  c.train.steps = 3;
  c.train.batch_size = 8;
  c.sample.steps = 2;
  return fm::train(c, {d / run, ""}).checkpoint;
}

torch::Tensor samples(const std::string& out) { return fm::read_npz(out + "/samples.npz", {"arr_0"}).at("arr_0"); }

std::string samples_png_bytes(const std::string& dir) {
  std::ifstream f(dir + "/samples.png", std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// A class-conditional field with a closed form: class c (and the null label) stands for data N(mu_c, s^2 I), whose
// OT marginal field is v_c(t, x) = mu_c + k(t) (x - t mu_c), k(t) = (t s^2 - (1-t)) / ((1-t)^2 + t^2 s^2); it carries
// x0 ~ N(0, I) to exactly mu_c + s x0. v_c is affine in mu_c with x-dependence independent of c, so the guided field
// (1 + w) v_c - w v_null is the field of mean (1 + w) mu_c - w mu_null: guided samples are (1+w) mu_c - w mu_null + s x0.
class ClassGaussians : public fm::VelocityField {
 public:
  ClassGaussians(torch::Tensor means, double s) : means_(std::move(means)), s2_(s * s) {}
  torch::Tensor forward(const torch::Tensor& t, const torch::Tensor& x, const torch::Tensor& labels) override {
    EXPECT_TRUE(labels.defined());
    seen.push_back(labels.clone());
    auto mu = means_.index_select(0, labels).to(x.dtype());
    auto tt = t.to(x.dtype()).unsqueeze(1);
    auto k = (tt * s2_ - (1 - tt)) / ((1 - tt).square() + tt.square() * s2_);
    return mu + k * (x - tt * mu);
  }
  int64_t num_classes() const override { return means_.size(0) - 1; }  // the last row is the null label's mean
  std::vector<torch::Tensor> seen;

 private:
  torch::Tensor means_;
  double s2_;
};

}  // namespace

TEST(Sample, SameSeedSameSamplesWhateverTheBatch) {
  TempDir d;
  auto ckpt = tiny_toy_checkpoint(d);
  auto s = fm::run_sampling(options(ckpt, d / "a", 100));
  EXPECT_EQ(s.n, 300);
  EXPECT_EQ(s.mean_nfe, 10.0);  // heun: 2 evaluations per step
  fm::run_sampling(options(ckpt, d / "b", 64));
  auto a = samples(d / "a"), b = samples(d / "b");
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{300, 2}));
  EXPECT_TRUE(torch::allclose(a, b, 1e-5, 1e-5));
  auto o = options(ckpt, d / "c", 100);
  o.seed = 8;
  fm::run_sampling(o);
  EXPECT_FALSE(torch::allclose(a, samples(d / "c"), 1e-2, 1e-2));
  EXPECT_FALSE(std::filesystem::exists(d / "a/shards")) << "shards are removed once samples.npz is written";
}

// A signal stops the run after the batch in flight with its shards kept; --resume continues it to the
// samples an uninterrupted run gives, bit for bit, and the NFE summary covers the batches of both invocations.
TEST(Sample, SignalStopsAfterABatchAndResumeContinues) {
  TempDir d;
  auto ckpt = tiny_toy_checkpoint(d);
  auto full = fm::run_sampling(options(ckpt, d / "full", 100));
  preempted_run(options(ckpt, d / "part", 100));
  EXPECT_TRUE(std::filesystem::exists(d / "part/shards/shard_000000000_000100.npz"));
  EXPECT_FALSE(std::filesystem::exists(d / "part/shards/shard_000000100_000100.npz"));
  EXPECT_FALSE(std::filesystem::exists(d / "part/samples.npz"));
  EXPECT_NE(input_error([&] { fm::run_sampling(options(ckpt, d / "part", 100)); }).find("--resume"),
            std::string::npos)
      << "refuses without --resume";
  auto o = options(ckpt, d / "part", 100);
  o.resume = true;
  auto resumed = fm::run_sampling(o);
  EXPECT_TRUE(torch::equal(samples(d / "part"), samples(d / "full")));
  EXPECT_EQ(resumed.mean_nfe, full.mean_nfe);
  EXPECT_EQ(resumed.max_nfe, 10.0);
}

// A resume with other settings than the shards were made with would mix two runs in one samples.npz.
TEST(Sample, ResumeRefusesOtherSettingsNamingTheOption) {
  TempDir d;
  auto ckpt = tiny_toy_checkpoint(d);
  preempted_run(options(ckpt, d / "part", 100));
  auto settings = read_json(d / "part/shards/settings.json");
  EXPECT_EQ(settings["solver"], "heun");
  EXPECT_EQ(settings["steps"], 5);
  EXPECT_EQ(settings["seed"], 7);
  EXPECT_TRUE(settings["atol"].is_null()) << "fixed-step runs do not depend on the tolerances";
  struct Case {
    std::function<void(fm::SampleOptions&)> change;
    std::string option;
  } cases[] = {
      {[](fm::SampleOptions& o) { o.seed = 8; }, "--seed"},
      {[](fm::SampleOptions& o) { o.solve.steps = 10; }, "--steps"},
      {[](fm::SampleOptions& o) { o.solve.solver = fm::Solver::midpoint; }, "--solver"},
      {[](fm::SampleOptions& o) { o.n = 400; }, "--num-samples"},
      {[](fm::SampleOptions& o) { o.batch = 50; }, "--batch"},
      {[](fm::SampleOptions& o) { o.weights = fm::Weights::raw; }, "--weights"},
      {[](fm::SampleOptions& o) { o.solve.time_grid = fm::TimeGrid::edm; }, "--time-grid"},
      {[](fm::SampleOptions& o) { o.straightness = true; }, "--straightness"},
  };
  for (const auto& c : cases) {
    auto o = options(ckpt, d / "part", 100);
    o.resume = true;
    c.change(o);
    auto msg = input_error([&] { fm::run_sampling(o); });
    EXPECT_EQ(msg.rfind(c.option + ":", 0), 0u) << c.option << ": " << msg;
  }
  auto o = options(tiny_toy_checkpoint(d, "other", 6), d / "part", 100);
  o.resume = true;
  EXPECT_EQ(input_error([&] { fm::run_sampling(o); }).rfind("--checkpoint:", 0), 0u) << "another model";
  // Tolerances of a fixed-step run do nothing, so they do not block a resume.
  o = options(ckpt, d / "part", 100);
  o.resume = true;
  o.solve.atol = 1e-3;
  fm::run_sampling(o);
  auto record = read_json(d / "part/samples.json");
  EXPECT_EQ(record["n"], 300);
  EXPECT_EQ(record["solver"], "heun");
  EXPECT_EQ(record["checkpoint_step"], 5);
  EXPECT_DOUBLE_EQ(record["mean_nfe"].get<double>(), 10.0);
  for (const char* key : {"checkpoint", "checkpoint_crc32", "seed", "classes", "cfg_scale", "wall_s", "fm_version",
                          "libtorch_version", "max_nfe", "time_grid", "rtol"})
    EXPECT_TRUE(record.contains(key)) << key;
  EXPECT_FALSE(record.contains("mean_straightness")) << "not asked for";
  EXPECT_FALSE(std::filesystem::exists(d / "part/shards")) << "shards and settings go once samples.npz is written";
}

// A second run into an --out that holds samples must not replace them silently.
TEST(Sample, SecondRunIntoOutIsRefusedUnlessOverwrite) {
  TempDir d;
  auto ckpt = tiny_toy_checkpoint(d);
  auto o = options(ckpt, d / "s", 100);
  fm::run_sampling(o);
  auto first = samples(d / "s");
  o.seed = 8;
  auto msg = input_error([&] { fm::run_sampling(o); });
  EXPECT_NE(msg.find("--overwrite"), std::string::npos) << msg;
  EXPECT_TRUE(torch::equal(samples(d / "s"), first)) << "nothing was touched";
  o.overwrite = true;
  fm::run_sampling(o);
  EXPECT_FALSE(torch::equal(samples(d / "s"), first));
  EXPECT_EQ(read_json(d / "s/samples.json")["seed"], 8);
  // --resume keeps a finished run of the same settings without redoing it, and refuses one of other settings.
  const auto second = samples(d / "s");
  const auto record = read_json(d / "s/samples.json");
  o.overwrite = false;
  o.resume = true;
  const auto kept = fm::run_sampling(o);
  EXPECT_EQ(kept.n, 300);
  EXPECT_EQ(kept.mean_nfe, record["mean_nfe"].get<double>());
  EXPECT_TRUE(torch::equal(samples(d / "s"), second));
  EXPECT_EQ(read_json(d / "s/samples.json"), record) << "nothing rewritten";
  o.seed = 9;
  msg = input_error([&] { fm::run_sampling(o); });
  EXPECT_EQ(msg.rfind("--seed:", 0), 0u) << msg;
  EXPECT_TRUE(torch::equal(samples(d / "s"), second));
  // A run that failed before its first batch left only its settings: no work to protect, so no refusal.
  std::filesystem::create_directories(d / "t/shards");
  std::ofstream(d / "t/shards/settings.json") << "{}";
  o = options(ckpt, d / "t", 100);
  EXPECT_EQ(fm::run_sampling(o).n, 300);
}

// fm sample into a training run's directory would replace the training's samples.png: refused unless --overwrite.
// And while another fm holds --out, a second one is refused naming it.
TEST(Sample, AnOutThatHoldsOtherFiguresOrIsInUseIsRefused) {
  TempDir d;
  auto ckpt = tiny_toy_checkpoint(d);  // trained into d/run, which holds its samples.png
  const auto run_dir = std::filesystem::path(ckpt).parent_path().parent_path().string();
  const auto before = samples_png_bytes(run_dir);
  auto o = options(ckpt, run_dir, 100);
  auto msg = input_error([&] { fm::run_sampling(o); });
  EXPECT_NE(msg.find("samples.png"), std::string::npos) << msg;
  o.resume = true;
  msg = input_error([&] { fm::run_sampling(o); });
  EXPECT_NE(msg.find("samples.png without samples.npz"), std::string::npos) << msg;
  EXPECT_EQ(samples_png_bytes(run_dir), before);
  {
    fm::RunLock held(fm::RunLock::in_dir(d / "busy"), "a test");
    auto r = fm::test::run(fm::test::fm_cmd("sample --checkpoint " + ckpt + " -n 10 --out " + d / "busy"));
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("in use by another fm (pid " + std::to_string(::getpid()) + " on host "),
              std::string::npos)
        << r.output;
  }
  auto r = fm::test::run(fm::test::fm_cmd("sample --checkpoint " + ckpt + " -n 10 --out " + d / "busy"));
  EXPECT_EQ(r.code, 0) << r.output;
}

// The solver comes from the checkpoint's sample section unless given.
TEST(Sample, SolverSettingsComeFromTheCheckpointUnlessGiven) {
  TempDir d;
  auto ckpt = tiny_toy_checkpoint(d);  // sample.solver midpoint (the default), sample.steps 2
  auto o = options(ckpt, d / "a", 100);
  o.solve = {};
  auto s = fm::run_sampling(o);
  EXPECT_EQ(s.mean_nfe, 4.0);  // midpoint: 2 evaluations per step, 2 steps
  EXPECT_EQ(s.record["solver"], "midpoint");
  EXPECT_EQ(s.record["steps"], 2);
  o.out_dir = d / "b";
  o.solve.steps = 3;
  EXPECT_EQ(fm::run_sampling(o).mean_nfe, 6.0);
  fm::SampleConfig from;
  from.solver = fm::Solver::dopri5;
  fm::SolveOverrides given;
  given.atol = 1e-3;
  auto r = fm::resolve_solve(from, given);
  EXPECT_EQ(r.solver, fm::Solver::dopri5);
  EXPECT_EQ(r.atol, 1e-3);
  EXPECT_EQ(r.rtol, from.rtol);
}

TEST(Sample, GridsAreSquareishWithClassesInColumns) {
  EXPECT_EQ(fm::grid_columns(64), 8);
  EXPECT_EQ(fm::grid_columns(100), 10);
  EXPECT_EQ(fm::grid_columns(10), 4);
  EXPECT_EQ(fm::grid_columns(1), 1);
  EXPECT_EQ(fm::grid_columns(64, 3), 9);    // a multiple of 3 near 8: each column one class
  EXPECT_EQ(fm::grid_columns(64, 10), 10);  // CIFAR-10: a column per class
  EXPECT_EQ(fm::grid_columns(16, 10), 10);
  EXPECT_EQ(fm::grid_columns(400, 10), 20);
}

TEST(Sample, ClassesNeedAClassConditionalModel) {
  TempDir d;
  auto o = options(tiny_toy_checkpoint(d), d / "s", 100);
  o.classes = "all";
  try {
    fm::run_sampling(o);
    ADD_FAILURE() << "no error";
  } catch (const fm::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("not class-conditional"), std::string::npos) << e.what();
  }
}

TEST(Sample, GuidanceMatchesTheClosedFormOfGaussianClasses) {
  auto f64 = fm::test::opts(torch::kFloat64);
  auto means = torch::tensor({1.0, -2.0, 0.5, 3.0, -1.0, -0.5, 0.0, 0.0}, f64).view({4, 2});  // 3 classes + null
  const double s = 0.5;
  ClassGaussians model(means, s);
  torch::manual_seed(0);
  auto x0 = torch::randn({6, 2}, f64);
  auto labels = torch::tensor({0, 1, 2, 0, 1, 2}, fm::test::opts(torch::kLong));
  fm::SolveSettings rk4{fm::Solver::rk4, 40};
  for (double w : {0.0, 1.5, 4.0}) {
    model.seen.clear();
    auto x1 = fm::generate(model, x0, labels, rk4, w).x;
    auto mu = (1 + w) * means.index_select(0, labels) - w * means[3];
    EXPECT_LT((x1 - (mu + s * x0)).abs().max().item<double>(), 1e-6) << "w = " << w;
    // Unguided sampling calls the model once per evaluation with the classes; guided, once with the classes and the
    // null label stacked.
    ASSERT_FALSE(model.seen.empty());
    auto expect = w == 0.0 ? labels : torch::cat({labels, torch::full({6}, 3, fm::test::opts(torch::kLong))});
    for (const auto& l : model.seen) ASSERT_TRUE(torch::equal(l, expect)) << l;
  }
}

// sample.cuda_graph: on CUDA the host calls the network only for the warm-up evaluations and the capture, every
// other evaluation is a replay, and the samples stay the eager solve's; elsewhere the setting changes nothing.
TEST(Sample, CudaGraphReplaysTheNetworkOnCudaAndChangesNothingElsewhere) {
  auto f64 = fm::test::opts(torch::kFloat64);
  auto means = torch::tensor({1.0, -2.0, 0.5, 3.0, -1.0, -0.5, 0.0, 0.0}, f64).view({4, 2});
  ClassGaussians model(means, 0.5);
  torch::manual_seed(0);
  auto x0 = torch::randn({6, 2}, f64);
  auto labels = torch::tensor({0, 1, 2, 0, 1, 2}, fm::test::opts(torch::kLong));
  fm::SolveSettings rk4{fm::Solver::rk4, 10}, graphed = rk4;
  graphed.cuda_graph = true;
  const auto eager = fm::generate(model, x0, labels, rk4, 1.5);
  EXPECT_EQ(model.seen.size(), static_cast<size_t>(eager.nfe));
  model.seen.clear();
  const auto g = fm::generate(model, x0, labels, graphed, 1.5);
  EXPECT_EQ(g.nfe, eager.nfe);
  EXPECT_FALSE(eager.graphed);
  if (fm::test::on_cuda()) {
    EXPECT_TRUE(g.graphed);
    EXPECT_EQ(model.seen.size(), static_cast<size_t>(fm::GraphedVelocity::kWarmupEvaluations + 1));
    EXPECT_LT((g.x - eager.x).abs().max().item<double>(), 1e-12);
  } else {
    EXPECT_FALSE(g.graphed);
    EXPECT_EQ(model.seen.size(), static_cast<size_t>(eager.nfe));
    EXPECT_TRUE(torch::equal(g.x, eager.x));
  }
  // fm sample --cuda-graph turns it on over a checkpoint's sample.cuda_graph = false, and cannot turn it off.
  fm::SampleConfig from;
  fm::SolveOverrides given;
  EXPECT_FALSE(fm::resolve_solve(from, given).cuda_graph);
  given.cuda_graph = true;
  EXPECT_TRUE(fm::resolve_solve(from, given).cuda_graph);
  from.cuda_graph = true;
  EXPECT_TRUE(fm::resolve_solve(from, {}).cuda_graph);
}

TEST(Sample, ClassConditionalUNetSamplesEveryClassWithGuidance) {
  TempDir d;
  auto ckpt = shapes_unet_checkpoint(d, "run", 0.1);
  EXPECT_EQ(fm::CheckpointReader(ckpt, torch::kCPU).class_names(),
            (std::vector<std::string>{"circle", "square", "triangle"}));
  auto o = options(ckpt, d / "all", 8);
  o.n = 10;
  o.classes = "all";
  o.cfg_scale = 2.0;
  fm::run_sampling(o);
  auto npz = fm::read_npz(d / "all/samples.npz", {"arr_0", "arr_1"});
  EXPECT_EQ(npz.at("arr_0").sizes(), (std::vector<int64_t>{10, 16, 16, 3}));
  EXPECT_EQ(npz.at("arr_0").scalar_type(), torch::kUInt8);
  EXPECT_TRUE(torch::equal(npz.at("arr_1"), torch::arange(10, torch::kLong) % 3)) << npz.at("arr_1");
  o.out_dir = d / "one";
  o.classes = "2";
  fm::run_sampling(o);
  npz = fm::read_npz(d / "one/samples.npz", {"arr_0", "arr_1"});
  EXPECT_TRUE(torch::equal(npz.at("arr_1"), torch::full({10}, 2, torch::kLong)));
  o.classes = "3";
  o.out_dir = d / "bad";
  EXPECT_THROW(fm::run_sampling(o), fm::InputError) << "class 3 of 3 is out of range";
  // Classes by name; a resume may name the class by index instead.
  o.classes = "triangle";
  o.out_dir = d / "named";
  auto s = fm::run_sampling(o);
  auto named = fm::read_npz(d / "named/samples.npz", {"arr_1"}).at("arr_1");
  EXPECT_TRUE(torch::equal(named, torch::full({10}, 2, torch::kLong)));
  EXPECT_EQ(s.record["classes"], 2);
  EXPECT_EQ(s.record["class_name"], "triangle");
  o.classes = "hexagon";
  o.out_dir = d / "hexagon";
  auto msg = input_error([&] { fm::run_sampling(o); });
  EXPECT_NE(msg.find("circle, square, triangle"), std::string::npos) << msg;
}

// With class_dropout 0 the null label is untrained: sampling without a class or with guidance would use it.
TEST(Sample, UntrainedNullLabelIsRefused) {
  TempDir d;
  auto ckpt = shapes_unet_checkpoint(d, "run", 0.0);
  auto o = options(ckpt, d / "s", 4);
  o.n = 4;
  auto msg = input_error([&] { fm::run_sampling(o); });
  EXPECT_NE(msg.find("class_dropout 0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--class"), std::string::npos) << msg;
  o.classes = "all";
  o.cfg_scale = 1.0;
  EXPECT_NE(input_error([&] { fm::run_sampling(o); }).find("--cfg-scale"), std::string::npos);
  o.cfg_scale = 0.0;
  EXPECT_EQ(fm::run_sampling(o).n, 4);
}

TEST(Sample, StraightnessMeterIntegratesTheDeviationFromTheChord) {
  // x_t = x0 + t d + sin(pi t) w deviates from its chord by sin(pi t) w: S = |w|^2 / 2. A straight line gives 0.
  torch::manual_seed(13);
  auto x0 = torch::randn({5, 3}), d = torch::randn({5, 3}), w = torch::randn({5, 3});
  fm::StraightnessMeter bent(x0), straight(x0);
  const int k = 2000;
  for (int i = 1; i <= k; ++i) {
    double t = static_cast<double>(i) / k;
    bent.step(t, x0 + t * d + std::sin(M_PI * t) * w);
    straight.step(t, x0 + t * d);
  }
  auto s = bent.finish(x0 + d);
  EXPECT_TRUE(torch::allclose(s, w.to(torch::kFloat64).pow(2).sum(1) / 2, 1e-5, 1e-6)) << s;
  EXPECT_LT(straight.finish(x0 + d).abs().max().item<double>(), 1e-9);
}

// --- SDE sampling, the guidance interval, the toy metrics -----------------------------------------------------------

// SiT's SDE sampler on a velocity field with a closed form (ClassGaussians: data N(mu, s^2 I), the OT path): the score
// comes from the velocity through the path, and Euler-Maruyama must end on the data's marginal N(mu, s^2): the mean
// and variance of 20000 samples within 4 standard errors plus the O(h) bias of 250 steps. Without the w * score drift
// the added noise would leave the variance far above s^2. The final noise-free step (SiT's "Mean") follows the SDE's
// drift, which denoises where w vanishes at t = 1 (sigma, decreasing); a constant w would contract the samples in it
// (variance 0.17 for 0.25 here), so that form runs to t = 1 without it.
TEST(Sample, SdeSamplerEndsOnTheGaussianTargetsMarginal) {
  auto f64 = fm::test::opts(torch::kFloat64);
  const double s = 0.5;
  auto means = torch::tensor({1.0, -2.0, 0.0, 0.0}, f64).view({2, 2});
  ClassGaussians model(means, s);
  const int64_t n = 20000;
  auto labels = torch::zeros({n}, fm::test::opts(torch::kLong));
  fm::SolveSettings sde;
  sde.solver = fm::Solver::euler_maruyama;
  sde.steps = 250;
  sde.path = std::make_shared<fm::CondOTPath>(0.0);
  for (auto form : {fm::Diffusion::sigma, fm::Diffusion::decreasing, fm::Diffusion::constant}) {
    sde.diffusion = form;
    sde.sde_last_step = form == fm::Diffusion::constant ? 0.0 : 0.04;
    torch::manual_seed(9);
    auto x0 = torch::randn({n, 2}, f64);
    model.seen.clear();
    auto r = fm::generate(model, x0, labels, sde);
    EXPECT_EQ(r.nfe, 250) << "249 stochastic steps and the final one, or 250 stochastic steps";
    auto mean = r.x.mean(0), var = r.x.var(0);
    std::printf("%s: mean %.4f %.4f, variance %.4f %.4f\n", fm::name_of(form), mean[0].item<double>(),
                mean[1].item<double>(), var[0].item<double>(), var[1].item<double>());
    for (int c = 0; c < 2; ++c) {
      EXPECT_NEAR(mean[c].item<double>(), means[0][c].item<double>(), 4 * s / std::sqrt(n) + 0.01)
          << fm::name_of(form) << " coordinate " << c;
      EXPECT_NEAR(var[c].item<double>(), s * s, 4 * s * s * std::sqrt(2.0 / n) + 0.01)
          << fm::name_of(form) << " coordinate " << c;
    }
    // The samples are not the ODE's: the SDE moved each away from where its noise would flow.
    EXPECT_GT((r.x - (means[0] + s * x0)).abs().mean().item<double>(), 0.05) << fm::name_of(form);
  }
  // A path is needed for the score; a single network evaluation cannot hold a stochastic step and the final one.
  sde.path.reset();
  EXPECT_THROW(fm::generate(model, torch::zeros({2, 2}, f64), labels.narrow(0, 0, 2), sde), std::logic_error);
  sde.path = std::make_shared<fm::CondOTPath>(0.0);
  sde.sde_last_step = 0.04;
  sde.steps = 1;
  EXPECT_THROW(fm::generate(model, torch::zeros({2, 2}, f64), labels.narrow(0, 0, 2), sde), fm::InputError);
}

// Guidance on an interval of times: ClassGaussians' field keeps the form v = m + k(t) (x - t m) with m the guided mean
// on the interval and the class mean off it, and for a fixed m the flow carries x - t m by r(t) / r(t_a),
// r(t) = sqrt((1-t)^2 + t^2 s^2). Piecewise, from x0: the closed form of the guided sample. Kynkaanniemi et al.'s
// interval of EDM noise levels (0.28, 5.42] (their ImageNet-512 setting) is t in [1/6.42, 1/1.28) in fm's time.
TEST(Sample, GuidanceIntervalMatchesTheClosedFormOfGaussianClasses) {
  auto f64 = fm::test::opts(torch::kFloat64);
  auto means = torch::tensor({1.0, -2.0, 0.5, 3.0, -1.0, -0.5, 0.0, 0.0}, f64).view({4, 2});
  const double s = 0.5, w = 2.0;
  ClassGaussians model(means, s);
  torch::manual_seed(0);
  auto x0 = torch::randn({6, 2}, f64);
  auto labels = torch::tensor({0, 1, 2, 0, 1, 2}, fm::test::opts(torch::kLong));
  fm::CondOTPath ot;
  const double lo = fm::time_at_noise_ratio(ot, 5.42), hi = fm::time_at_noise_ratio(ot, 0.28);
  EXPECT_NEAR(lo, 1 / 6.42, 1e-12);
  EXPECT_NEAR(hi, 1 / 1.28, 1e-12);
  fm::SolveSettings dopri{fm::Solver::dopri5, 0, 1e-10, 1e-10};
  auto x1 = fm::generate(model, x0, labels, dopri, fm::Guidance(w, lo, hi)).x;
  auto r = [&](double t) { return std::sqrt((1 - t) * (1 - t) + t * t * s * s); };
  auto mu = means.index_select(0, labels), guided = (1 + w) * mu - w * means[3];
  auto x_lo = lo * mu + r(lo) * x0;
  auto x_hi = hi * guided + (x_lo - lo * guided) * (r(hi) / r(lo));
  auto expect = mu + (x_hi - hi * mu) * (s / r(hi));
  EXPECT_LT((x1 - expect).abs().max().item<double>(), 1e-6);
  // Guidance everywhere is another sample: the interval is what makes the difference.
  auto everywhere = fm::generate(model, x0, labels, dopri, fm::Guidance(w)).x;
  EXPECT_GT((everywhere - expect).abs().max().item<double>(), 0.5);
  // Off the interval the network runs once on the classes; on it, on the classes and the null label stacked.
  size_t single = 0, stacked = 0;
  for (const auto& l : model.seen) (l.size(0) == 6 ? single : stacked) += 1;
  EXPECT_GT(single, 0u);
  EXPECT_GT(stacked, 0u);
}

// The sliced Wasserstein distance against closed forms: a translation by c moves every projection by theta . c, so
// SW_2^2 is the mean of (theta . c)^2; between {0, 1} and {0, 0.5, 1} the quantile functions differ by 0.5 on
// (1/3, 2/3], W_2^2 = 1/12; a cloud is at distance 0 from itself.
TEST(Sample, SlicedWassersteinDistanceMatchesClosedForms) {
  auto f64 = fm::test::opts(torch::kFloat64);
  torch::manual_seed(1);
  auto x = torch::randn({500, 2}, f64);
  auto c = torch::tensor({0.7, -1.2}, f64);
  auto dirs = fm::random_directions(2, 64, 3);
  EXPECT_LT((dirs.norm(2, 1) - 1).abs().max().item<double>(), 1e-12);
  const double expect = std::sqrt(dirs.matmul(c).square().mean().item<double>());
  EXPECT_NEAR(fm::sliced_wasserstein(x, x + c, dirs), expect, 1e-12);
  EXPECT_NEAR(fm::sliced_wasserstein(x, x.flip(0), dirs), 0.0, 1e-12) << "the order of the points does not matter";
  EXPECT_NEAR(fm::wasserstein_1d(torch::tensor({0.0, 1.0}, f64), torch::tensor({0.0, 0.5, 1.0}, f64)),
              std::sqrt(1.0 / 12), 1e-12);
  EXPECT_NEAR(fm::wasserstein_1d(torch::tensor({1.0, 0.0}, f64), torch::tensor({3.0, 2.0}, f64)), 2.0, 1e-12);
  // Unequal sizes along one direction: the 1-D distance of the projections.
  auto y = torch::randn({333, 2}, f64);
  auto e1 = torch::tensor({{1.0, 0.0}}, f64);
  EXPECT_NEAR(fm::sliced_wasserstein(x, y, e1), fm::wasserstein_1d(x.select(1, 0), y.select(1, 0)), 1e-12);
}

// The toy metrics of the checkerboard's own points: all on the board and close in distribution; a standard normal
// (a model that learned nothing) is mostly off the board and far away.
TEST(Sample, ToyMetricsTellTheCheckerboardFromNoise) {
  torch::manual_seed(2);
  auto data = fm::sample_toy(fm::ToyData::checkerboard, 5000);
  auto own = fm::toy_metrics(data, fm::ToyData::checkerboard, 5000, 0);
  EXPECT_EQ(own["on_checkerboard"].get<double>(), 1.0);
  EXPECT_LT(own["sliced_wasserstein"].get<double>(), 0.1);
  auto noise = fm::toy_metrics(torch::randn({5000, 2}), fm::ToyData::checkerboard, 5000, 0);
  EXPECT_LT(noise["on_checkerboard"].get<double>(), 0.6);
  EXPECT_GT(noise["sliced_wasserstein"].get<double>(), 5 * own["sliced_wasserstein"].get<double>());
  // The reference points come from the seed alone and leave the default generator where it was.
  torch::manual_seed(3);
  auto before = torch::rand({1});
  torch::manual_seed(3);
  EXPECT_EQ(fm::toy_metrics(data, fm::ToyData::checkerboard, 5000, 0), own);
  EXPECT_TRUE(torch::equal(torch::rand({1}), before));
}

// SDE samples draw their noise per item and step: a run in batches of 64 gives the samples of batches of 100; a toy
// run records how close its samples are to its data.
TEST(Sample, SdeSamplesDoNotDependOnTheBatchAndToyRunsRecordTheirMetrics) {
  TempDir d;
  auto ckpt = tiny_toy_checkpoint(d);
  auto o = options(ckpt, d / "a", 100);
  o.solve.solver = fm::Solver::euler_maruyama;
  o.solve.steps = 6;
  o.solve.diffusion = fm::Diffusion::constant;
  auto s = fm::run_sampling(o);
  EXPECT_EQ(s.mean_nfe, 6.0);
  auto record = read_json(d / "a/samples.json");
  EXPECT_EQ(record["diffusion"], "constant");
  EXPECT_EQ(record["sde_last_step"], 0.04);
  EXPECT_EQ(record["toy_metrics"]["reference"], "toy:checkerboard");
  EXPECT_GT(record["toy_metrics"]["sliced_wasserstein"].get<double>(), 0.0);
  EXPECT_TRUE(record["toy_metrics"].contains("on_checkerboard"));
  auto b = o;
  b.out_dir = d / "b";
  b.batch = 64;
  fm::run_sampling(b);
  EXPECT_TRUE(torch::allclose(samples(d / "a"), samples(d / "b"), 1e-5, 1e-5));
  // Another diffusion is another run: a resume with it is refused naming the option.
  auto c = o;
  c.out_dir = d / "a";
  c.resume = true;
  c.solve.diffusion = fm::Diffusion::sigma;
  EXPECT_NE(input_error([&] { fm::run_sampling(c); }).find("--diffusion"), std::string::npos);
  // The guidance interval is checked before any work.
  auto bad = options(ckpt, d / "bad", 100);
  bad.cfg_lo = 0.8;
  bad.cfg_hi = 0.2;
  EXPECT_NE(input_error([&] { fm::run_sampling(bad); }).find("--cfg-interval"), std::string::npos);
}
