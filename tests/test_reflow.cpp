// Reflow: fm reflow's pairs (what they hold, over ranks, stopped and resumed), the pairs data set and its reader, the
// pairs coupling that trains the rectified flow, and train.init_from.
#include <csignal>
#include <filesystem>
#include <fstream>
#include <mutex>

#include <gtest/gtest.h>

#include "checkpoint/checkpoint.h"
#include "checkpoint/network.h"
#include "data/dataset.h"
#include "data/eval_data.h"
#include "data/pairs.h"
#include "io/npy.h"
#include "sample/reflow_run.h"
#include "sample/sample_run.h"
#include "solver/ode.h"
#include "test_util.h"
#include "thread_world.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/preemption.h"

using fm::test::TempDir;

namespace {

std::string pair_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

fm::Config reflow_toy_config() {
  fm::Config c;
  c.device = fm::test::device_spec();
  c.model.mlp.hidden = 16;
  c.model.mlp.depth = 2;
  c.train.steps = 5;
  c.train.batch_size = 32;
  c.sample.n = 50;
  c.sample.steps = 2;
  return c;
}

std::string reflow_toy_checkpoint(const TempDir& d) { return fm::train(reflow_toy_config(), {d / "toy", ""}).checkpoint; }

// 45 pairs in batches of 8 (6 batches: over 4 ranks the last round has 2) by SiT's SDE sampler, whose noise is drawn
// per item and step: the pairs must not depend on how the batches are spread.
fm::ReflowOptions reflow_options(const std::string& ckpt, const std::string& out) {
  fm::ReflowOptions o;
  o.checkpoint = ckpt;
  o.out_dir = out;
  o.device = fm::test::device_spec();
  o.n = 45;
  o.batch = 8;
  o.seed = 11;
  o.solve.solver = fm::Solver::euler_maruyama;
  o.solve.steps = 5;
  return o;
}

template <class F>
std::string reflow_error(F f) {
  try {
    f();
  } catch (const fm::InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// Pair i is the noise fm sample starts item i from and the sample fm sample makes of it, with the same settings.
TEST(Reflow, PairsAreTheNoiseAndTheSamplesOfFmSample) {
  TempDir d;
  const auto ckpt = reflow_toy_checkpoint(d);
  auto o = reflow_options(ckpt, d / "pairs");
  o.solve.solver = fm::Solver::heun;
  o.solve.steps = 4;
  const auto s = fm::run_reflow(o);
  EXPECT_EQ(s.n, 45);
  EXPECT_EQ(s.mean_nfe, 8.0);
  auto pairs = fm::read_npz(d / "pairs/pairs.npz");
  EXPECT_EQ(pairs.count("labels"), 0u) << "an unconditional model has no labels";
  EXPECT_TRUE(torch::equal(pairs.at("x0"), fm::sample_noise(11, 0, 45, {2})));
  fm::SampleOptions so;
  static_cast<fm::GenerationOptions&>(so) = o;
  so.out_dir = d / "samples";
  fm::run_sampling(so);
  EXPECT_TRUE(torch::equal(pairs.at("x1"), fm::read_npz(d / "samples/samples.npz").at("arr_0")));
  auto record = nlohmann::json::parse(pair_bytes(d / "pairs/pairs.json"));
  EXPECT_EQ(record["data"], "toy:checkerboard");
  EXPECT_EQ(record["solver"], "heun");
  EXPECT_EQ(record["n"], 45);
  EXPECT_EQ(record["sample_shape"], nlohmann::json({2}));
  EXPECT_TRUE(record.contains("checkpoint_crc32"));
  // They read back as a data set of pairs.
  auto ds = fm::load_dataset(fm::parse_data_spec("pairs:" + d / "pairs"), torch::kCPU);
  EXPECT_TRUE(ds.is_pairs());
  EXPECT_EQ(ds.size(), 45);
  EXPECT_EQ(ds.sample_shape(), (std::vector<int64_t>{2}));
  EXPECT_TRUE(torch::equal(ds.pair_x1, pairs.at("x1")));
}

// Ranks write their shards and rank 0 the pairs: the bytes one process writes, SDE noise included.
TEST(Reflow, PairsOverRanksAreTheBytesOfOneProcess) {
  FM_SKIP_ON_CUDA("threads share one GPU here; the torchrun tests cover ranks on devices");
  TempDir d;
  const auto ckpt = reflow_toy_checkpoint(d);
  fm::run_reflow(reflow_options(ckpt, d / "one"));
  const std::string want = pair_bytes(d / "one/pairs.npz");
  ASSERT_GT(want.size(), 2u * 45 * 2 * 4);
  fm::test::run_ranks(2, [&](fm::dist::World& w) { fm::run_reflow(reflow_options(ckpt, d / "two"), &w); });
  EXPECT_EQ(pair_bytes(d / "two/pairs.npz"), want);
  EXPECT_FALSE(std::filesystem::exists(d / "two/shards"));
  // Another batch size cuts other batches, and the noise stays each item's.
  auto o = reflow_options(ckpt, d / "batch");
  o.batch = 20;
  fm::run_reflow(o);
  auto a = fm::read_npz(d / "one/pairs.npz"), b = fm::read_npz(d / "batch/pairs.npz");
  EXPECT_TRUE(torch::equal(a.at("x0"), b.at("x0")));
  EXPECT_TRUE(torch::allclose(a.at("x1"), b.at("x1"), 1e-5, 1e-5));
}

// A signal stops fm reflow after the round in flight with its shards kept (exit 75 in the command); --resume, over
// another number of ranks too, ends on the bytes of an uninterrupted run. A finished run is kept by --resume and
// protected without it; a resume with other settings is refused naming the option.
TEST(Reflow, StoppedReflowResumesByteIdentically) {
  FM_SKIP_ON_CUDA("threads share one GPU here; the torchrun tests cover ranks on devices");
  TempDir d;
  const auto ckpt = reflow_toy_checkpoint(d);
  fm::run_reflow(reflow_options(ckpt, d / "whole"));
  fm::install_stop_handlers();
  std::raise(SIGUSR1);
  try {
    fm::run_reflow(reflow_options(ckpt, d / "part"));
    ADD_FAILURE() << "the run did not stop";
  } catch (const fm::StopRequested& e) {
    EXPECT_EQ(e.signal, SIGUSR1);
    EXPECT_TRUE(e.state_saved);
  }
  fm::reset_stop_request();
  EXPECT_TRUE(std::filesystem::exists(d / "part/shards/shard_000000000_000008.npz"));
  EXPECT_FALSE(std::filesystem::exists(d / "part/pairs.npz"));
  auto more = reflow_options(ckpt, d / "part");
  more.resume = true;
  more.n = 50;
  EXPECT_NE(reflow_error([&] { fm::run_reflow(more); }).find("--num-pairs"), std::string::npos);
  EXPECT_NE(reflow_error([&] { fm::run_reflow(reflow_options(ckpt, d / "part")); }).find("--resume"),
            std::string::npos);
  fm::test::run_ranks(3, [&](fm::dist::World& w) {
    auto o = reflow_options(ckpt, d / "part");
    o.resume = true;
    fm::run_reflow(o, &w);
  });
  EXPECT_EQ(pair_bytes(d / "part/pairs.npz"), pair_bytes(d / "whole/pairs.npz"));
  EXPECT_NE(reflow_error([&] { fm::run_reflow(reflow_options(ckpt, d / "whole")); }).find("pairs.npz"),
            std::string::npos);
  auto again = reflow_options(ckpt, d / "whole");
  again.resume = true;
  EXPECT_EQ(fm::run_reflow(again).n, 45);
}

// The reader's contract: pairs as fm reflow writes them, or one InputError line naming the file and what is wrong.
TEST(Reflow, PairsReaderRefusesBadFilesInOneLine) {
  TempDir d;
  auto x = torch::randn({4, 2});
  auto write = [&](const std::string& name, const std::vector<std::pair<std::string, torch::Tensor>>& arrays) {
    std::filesystem::create_directories(d / name);
    fm::write_npz(d / (name + "/pairs.npz"), arrays);
    return name;
  };
  auto error_of = [&](const std::string& name) {
    const auto msg = reflow_error([&] { fm::read_pairs(d / name); });
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    return msg;
  };
  EXPECT_EQ(fm::read_pairs(d / write("good", {{"x0", x}, {"x1", x + 1}, {"labels", torch::tensor({0, 2, 1, 0})}}))
                .num_classes,
            3);
  EXPECT_NE(error_of(write("no_x1", {{"x0", x}})).find("no array 'x1'"), std::string::npos);
  EXPECT_NE(error_of(write("ints", {{"x0", x}, {"x1", torch::ones({4, 2}, torch::kLong)}})).find("dtype"),
            std::string::npos);
  EXPECT_NE(error_of(write("shapes", {{"x0", x}, {"x1", torch::randn({3, 2})}})).find("differ in shape"),
            std::string::npos);
  EXPECT_NE(error_of(write("rank", {{"x0", torch::randn({4, 2, 2})}, {"x1", torch::randn({4, 2, 2})}})).find("shape"),
            std::string::npos);
  EXPECT_NE(error_of(write("empty", {{"x0", torch::randn({0, 2})}, {"x1", torch::randn({0, 2})}})).find("empty"),
            std::string::npos);
  auto nan = x.clone();
  nan[2][1] = NAN;
  EXPECT_NE(error_of(write("nan", {{"x0", x}, {"x1", nan}})).find("non-finite value in pair 2"), std::string::npos);
  EXPECT_NE(error_of(write("labels", {{"x0", x}, {"x1", x}, {"labels", torch::tensor({0, -1, 0, 0})}})).find("'labels'"),
            std::string::npos);
  EXPECT_NE(error_of("missing").find("no "), std::string::npos);
  // Pairs are samples, not data to evaluate on.
  fm::DataConfig pairs = fm::parse_data_spec("pairs:" + d / "good");
  EXPECT_NE(reflow_error([&] { fm::resolve_eval_data("", pairs, {2}, fm::Split::test); }).find("fm reflow"),
            std::string::npos);
}

// data.resolution may restate the side of image pairs, as configs made for the images they came from do; any other
// side (or any for 2-D pairs) would ask for resizing, which pairs do not do.
TEST(Reflow, PairsTakeOnlyTheResolutionTheyHave) {
  TempDir d;
  std::filesystem::create_directories(d / "img");
  fm::write_npz(d / "img/pairs.npz", {{"x0", torch::randn({4, 3, 8, 8})}, {"x1", torch::rand({4, 3, 8, 8}) * 2 - 1}});
  std::filesystem::create_directories(d / "pts");
  fm::write_npz(d / "pts/pairs.npz", {{"x0", torch::randn({4, 2})}, {"x1", torch::randn({4, 2})}});
  auto spec = [&](const std::string& dir, int64_t resolution) {
    auto c = fm::parse_data_spec("pairs:" + d / dir);
    c.resolution = resolution;
    return c;
  };
  EXPECT_EQ(fm::load_dataset(spec("img", 8), torch::kCPU).size(), 4);
  EXPECT_EQ(fm::load_dataset(spec("img", 0), torch::kCPU).size(), 4);
  for (const auto& [dir, res] : std::vector<std::pair<std::string, int64_t>>{{"img", 16}, {"pts", 8}}) {
    const auto msg = reflow_error([&] { fm::load_dataset(spec(dir, res), torch::kCPU); });
    EXPECT_EQ(msg.rfind("data.resolution: ", 0), 0u) << msg;
    EXPECT_NE(msg.find(dir + "/pairs.npz"), std::string::npos) << msg;
  }
}

namespace {

// Between N(0, I) and N(m, diag(s^2)) the exact (1-rectified) flow of the independent coupling moves each coordinate
// as x_t = t m + sqrt((1-t)^2 + t^2 s^2) x0, so its pairs are the OT map x1 = m + s x0: rk4 on that field gives them.
void write_exact_flow_pairs(const std::string& dir, int64_t n, bool shuffle) {
  const auto m = torch::tensor({2.0, -1.0}, torch::kFloat64), s2 = torch::tensor({4.0, 0.25}, torch::kFloat64);
  fm::OdeFunc v = [&](double t, const torch::Tensor& x) {
    auto k = (t * s2 - (1 - t)) / ((1 - t) * (1 - t) + t * t * s2);
    return m + k * (x - t * m);
  };
  torch::manual_seed(21);
  auto x0 = torch::randn({n, 2}, torch::kFloat64);
  auto x1 = fm::solve_fixed(v, x0, fm::uniform_grid(0, 1, 200), fm::Solver::rk4).x;
  EXPECT_LT((x1 - (m + s2.sqrt() * x0)).abs().max().item<double>(), 1e-8) << "the exact flow ends on the OT map";
  if (shuffle) x0 = x0.index_select(0, torch::randperm(n));  // the same marginals, the coupling of independent noise
  std::filesystem::create_directories(dir);
  fm::write_npz(dir + "/pairs.npz", {{"x0", x0.to(torch::kFloat32)}, {"x1", x1.to(torch::kFloat32)}});
}

// fm train on a pairs data set with path.coupling = pairs, Lee et al.'s U-shaped times and pseudo-Huber loss; then one
// Euler step of the trained field from fresh noise against the OT map: the mean squared error.
double one_step_error_after_training_on(const TempDir& d, const std::string& pairs) {
  fm::Config c;
  c.device = "cpu";
  c.seed = 11;
  c.data.format = fm::DataFormat::pairs;
  c.data.path = d / pairs;
  c.path.coupling = fm::Coupling::pairs;
  c.time.sampler = fm::TimeSampler::u_shaped;
  c.loss.type = fm::LossType::pseudo_huber;
  c.model.mlp.hidden = 64;
  c.model.mlp.depth = 2;
  c.train.steps = 1500;
  c.train.batch_size = 256;
  c.train.lr = 3e-3;
  c.train.decay = fm::LrDecay::cosine;
  c.train.final_lr_scale = 0.1;
  c.train.log_every = c.train.ckpt_every = 1500;
  c.train.tensorboard = false;
  c.sample.n = 100;
  c.sample.steps = 2;
  const auto ckpt = fm::train(c, {d / (pairs + "_run"), ""}).checkpoint;
  fm::CheckpointReader ck(ckpt, torch::kCPU);
  auto net = fm::load_network(ck, fm::Weights::raw, torch::kCPU);
  torch::NoGradGuard ng;
  net->eval();
  torch::manual_seed(22);
  auto x0 = torch::randn({4000, 2});
  auto x1 = x0 + (*net)(torch::zeros({4000}), x0);
  auto exact = torch::tensor({2.0, -1.0}) + torch::tensor({2.0, 0.5}) * x0;
  return (x1 - exact).pow(2).sum(1).mean().item<double>();
}

}  // namespace

// The 2-rectified flow of an exact flow: its pairs are the OT map, so training on them learns the straight flow and
// one Euler step lands on the map. The same points with their noise shuffled (independent noise, the coupling a first
// flow trains on) give the field E[x1] - x0 at t = 0 instead: every point lands near m, an error of sum(s^2) = 4.25.
TEST(Reflow, TrainingOnTheExactFlowsPairsLearnsTheStraightMap) {
  TempDir d;
  write_exact_flow_pairs(d / "exact", 4096, false);
  write_exact_flow_pairs(d / "shuffled", 4096, true);
  const double rectified = one_step_error_after_training_on(d, "exact");
  const double independent = one_step_error_after_training_on(d, "shuffled");
  std::printf("one Euler step, mean squared error against the OT map: pairs %.4f, shuffled %.4f\n", rectified,
              independent);
  EXPECT_LT(rectified, 0.1);
  EXPECT_GT(independent, 2.0);
}

// Pairs train only with the pairs coupling, and the pairs coupling only on pairs: both refused before training.
TEST(Reflow, PairsDataAndThePairsCouplingGoTogether) {
  TempDir d;
  write_exact_flow_pairs(d / "p", 64, false);
  auto c = reflow_toy_config();
  c.data.format = fm::DataFormat::pairs;
  c.data.path = d / "p";
  EXPECT_NE(reflow_error([&] { fm::train(c, {d / "a", ""}); }).find("path.coupling"), std::string::npos);
  c = reflow_toy_config();
  c.path.coupling = fm::Coupling::pairs;
  EXPECT_NE(reflow_error([&] { fm::train(c, {d / "b", ""}); }).find("pairs:DIR"), std::string::npos);
}

// train.init_from: a fresh run starts from another checkpoint's model and EMA weights, with its own optimizer and step
// (a learning rate of 1e-12 keeps its one step from moving them measurably); a checkpoint of another model is refused.
TEST(Reflow, InitFromStartsAFreshRunFromAnotherCheckpointsWeights) {
  TempDir d;
  const auto base = reflow_toy_checkpoint(d);
  auto c = reflow_toy_config();
  c.train.init_from = base;
  c.train.steps = 1;
  c.train.lr = 1e-12;
  c.train.ema_decay = 1.0;
  const auto ckpt = fm::train(c, {d / "init", ""}).checkpoint;
  fm::CheckpointReader a(base, torch::kCPU), b(ckpt, torch::kCPU);
  EXPECT_EQ(b.step(), 1);
  for (auto w : {fm::Weights::raw, fm::Weights::ema}) {
    auto na = fm::load_network(a, w, torch::kCPU), nb = fm::load_network(b, w, torch::kCPU);
    auto pa = na->parameters(), pb = nb->parameters();
    ASSERT_EQ(pa.size(), pb.size());
    for (size_t i = 0; i < pa.size(); ++i) EXPECT_LT((pa[i] - pb[i]).abs().max().item<double>(), 1e-8) << i;
  }
  // A fresh model differs from it: the test can tell.
  auto fresh = reflow_toy_config();
  fresh.seed = 1;
  fresh.train.steps = 1;
  fresh.train.lr = 1e-12;
  fm::CheckpointReader f(fm::train(fresh, {d / "fresh", ""}).checkpoint, torch::kCPU);
  auto pf = fm::load_network(f, fm::Weights::raw, torch::kCPU)->parameters();
  auto pa = fm::load_network(a, fm::Weights::raw, torch::kCPU)->parameters();
  EXPECT_GT((pf[0] - pa[0]).abs().max().item<double>(), 1e-3);
  auto other = c;
  other.model.mlp.hidden = 32;
  const auto msg = reflow_error([&] { fm::train(other, {d / "other", ""}); });
  EXPECT_NE(msg.find("train.init_from"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.mlp.hidden"), std::string::npos) << msg;
}
