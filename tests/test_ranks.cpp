// Sampling, likelihood and FID statistics split over ranks: the batch plan, and whole runs over ranks
// that are threads (tests/thread_world.h) compared with one process, byte for byte.
#include <csignal>
#include <fstream>
#include <iterator>
#include <set>

#include <gtest/gtest.h>

#include "config/config.h"
#include "data/shapes.h"
#include "eval/eval_nll.h"
#include "fid/fid_stats.h"
#include "fid/inception.h"
#include "io/npy.h"
#include "sample/sample_run.h"
#include "test_util.h"
#include "thread_world.h"
#include "train/trainer.h"
#include "util/preemption.h"
#include "dist/rank_batches.h"

using fm::test::TempDir;

namespace {

std::string bytes_of(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::string toy_checkpoint(const TempDir& d) {
  fm::Config c;
  c.device = fm::test::device_spec();
  c.model.mlp.hidden = 16;
  c.model.mlp.depth = 2;
  c.train.steps = 5;
  c.train.batch_size = 32;
  c.sample.n = 50;
  c.sample.steps = 2;
  return fm::train(c, {d / "toy", ""}).checkpoint;
}

// A small unconditional U-Net on 8x8 shapes, trained for two steps.
std::string unet_checkpoint(const TempDir& d) {
  fm::Config c;
  c.device = "cpu";
  c.data.format = fm::DataFormat::shapes;
  c.data.path = "16";
  c.data.resolution = 8;
  c.model.type = fm::ModelType::unet;
  c.model.unet = fm::test::tiny_unet();
  c.train.steps = 2;
  c.train.batch_size = 4;
  c.train.log_every = c.train.ckpt_every = 2;
  c.sample.n = 2;
  c.sample.steps = 1;
  return fm::train(c, {d / "unet", ""}).checkpoint;
}

std::string torchrun_exe() {
  return std::filesystem::path(fm::test::python()).parent_path().string() + "/torchrun";
}

// `torchrun --no-python --standalone --nproc-per-node N fm ARGS` (a free port each time), every rank's output together.
fm::test::RunResult torchrun_fm(int nproc, const std::string& args) {
  return fm::test::run("OMP_NUM_THREADS=1 " + torchrun_exe() + " --no-python --standalone --nproc-per-node " +
                       std::to_string(nproc) + " " + fm::test::fm_binary() + " " + args);
}

int count(const std::string& haystack, const std::string& needle) {
  int n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1)) ++n;
  return n;
}

fm::SampleOptions sample_options(const std::string& ckpt, const std::string& out) {
  fm::SampleOptions o;
  o.checkpoint = ckpt;
  o.out_dir = out;
  o.device = fm::test::device_spec();
  o.n = 45;
  o.batch = 8;  // 6 batches: over 4 ranks the last round has 2, over 5 only one
  o.seed = 11;
  o.solve.solver = fm::Solver::dopri5;  // one step size per batch: batches must be cut as one process cuts them
  o.solve.atol = o.solve.rtol = 1e-4;
  o.straightness = true;
  return o;
}

}  // namespace

TEST(Ranks, BatchesCoverEveryItemOnceAsOneProcessCutsThem) {
  for (int64_t n : {0, 1, 7, 45, 300})
    for (int64_t batch : {1, 8, 64, 500})
      for (int size : {1, 2, 3, 5}) {
        const fm::RankBatches one(n, batch, 0, 1);
        std::vector<int> owner(n, -1);
        for (int rank = 0; rank < size; ++rank) {
          const fm::RankBatches plan(n, batch, rank, size);
          ASSERT_EQ(plan.rounds(), (one.batches() + size - 1) / size) << "every rank makes as many rounds";
          for (int64_t k = 0; k < plan.rounds(); ++k) {
            const auto b = plan.mine(k);
            const auto whole = one.batch(k * size + rank);
            EXPECT_EQ(b.first, whole.first);
            EXPECT_EQ(b.count, whole.count) << "the batches one process cuts";
            for (int64_t i = b.first; i < b.first + b.count; ++i) {
              EXPECT_EQ(owner[i], -1) << "item " << i << " given twice";
              owner[i] = rank;
            }
            // The round's items, contiguous and in rank order, are what a gather of the round concatenates.
            const auto r = plan.round_items(k);
            int64_t next = r.first;
            for (int q = 0; q < size; ++q) {
              const auto bq = fm::RankBatches(n, batch, q, size).mine(k);
              if (bq.empty()) continue;
              EXPECT_EQ(bq.first, next);
              next += bq.count;
            }
            EXPECT_EQ(next, r.first + r.count);
          }
        }
        for (int64_t i = 0; i < n; ++i) EXPECT_GE(owner[i], 0) << "item " << i << " of " << n << " never given";
      }
  EXPECT_THROW(fm::RankBatches(10, 0, 0, 1), std::invalid_argument);
  EXPECT_THROW(fm::RankBatches(10, 2, 2, 2), std::invalid_argument);
}

TEST(Ranks, NoiseOfASampleDoesNotDependOnTheWorldSize) {
  const std::vector<int64_t> shape{3, 4, 4};
  const auto alone = fm::sample_noise(5, 0, 700, shape);
  for (int size : {2, 3, 7}) {
    std::vector<torch::Tensor> parts(700);
    for (int rank = 0; rank < size; ++rank) {
      const fm::RankBatches plan(700, 64, rank, size);
      for (int64_t k = 0; k < plan.rounds(); ++k) {
        const auto b = plan.mine(k);
        if (!b.empty()) parts[b.first] = fm::sample_noise(5, b.first, b.count, shape);
      }
    }
    std::vector<torch::Tensor> in_order;
    for (auto& p : parts)
      if (p.defined()) in_order.push_back(p);
    EXPECT_TRUE(torch::equal(torch::cat(in_order), alone)) << size << " ranks";
  }
}

// Ranks write their own shards into --out/shards and rank 0 alone writes samples.npz: the bytes of one process.
TEST(Ranks, SamplingOverRanksWritesTheBytesOfOneProcess) {
  FM_SKIP_ON_CUDA("threads share one GPU here; the torchrun tests cover ranks on devices");
  TempDir d;
  const auto ckpt = toy_checkpoint(d);
  const auto alone = fm::run_sampling(sample_options(ckpt, d / "one"));
  const std::string want = bytes_of(d / "one/samples.npz");
  ASSERT_GT(want.size(), 45u * 2 * 4);
  EXPECT_GT(alone.straightness, 0.0);
  EXPECT_EQ(nlohmann::json::parse(bytes_of(d / "one/samples.json"))["mean_straightness"].get<double>(),
            alone.straightness);
  for (int size : {2, 5}) {
    const std::string out = d / ("ranks" + std::to_string(size));
    fm::test::run_ranks(size, [&](fm::dist::World& w) {
      auto s = fm::run_sampling(sample_options(ckpt, out), &w);
      EXPECT_EQ(s.straightness, alone.straightness) << "rank " << w.rank();
      EXPECT_EQ(s.mean_nfe, alone.mean_nfe);
      EXPECT_EQ(s.max_nfe, alone.max_nfe);
    });
    EXPECT_EQ(bytes_of(out + "/samples.npz"), want) << size << " ranks";
    EXPECT_FALSE(std::filesystem::exists(out + "/shards")) << "rank 0 removes every rank's shards at the end";
  }
}

// A stop on the ranks ends every rank after the same round with their shards kept; a resume over another number of
// ranks continues to the samples of an uninterrupted run.
TEST(Ranks, StoppedRanksResumeOverAnotherWorldSize) {
  FM_SKIP_ON_CUDA("threads share one GPU here; the torchrun tests cover ranks on devices");
  TempDir d;
  const auto ckpt = toy_checkpoint(d);
  fm::run_sampling(sample_options(ckpt, d / "one"));
  fm::install_stop_handlers();
  std::raise(SIGUSR1);
  int stopped = 0;
  std::mutex m;
  fm::test::run_ranks(2, [&](fm::dist::World& w) {
    try {
      fm::run_sampling(sample_options(ckpt, d / "part"), &w);
    } catch (const fm::StopRequested& e) {
      std::lock_guard<std::mutex> lock(m);
      EXPECT_EQ(e.signal, SIGUSR1);
      ++stopped;
    }
  });
  fm::reset_stop_request();
  EXPECT_EQ(stopped, 2) << "both ranks stop";
  EXPECT_TRUE(std::filesystem::exists(d / "part/shards/shard_000000000_000008.npz"));
  EXPECT_TRUE(std::filesystem::exists(d / "part/shards/shard_000000008_000008.npz"));
  EXPECT_FALSE(std::filesystem::exists(d / "part/shards/shard_000000016_000008.npz")) << "stopped after round 0";
  EXPECT_FALSE(std::filesystem::exists(d / "part/samples.npz"));
  fm::test::run_ranks(3, [&](fm::dist::World& w) {
    auto o = sample_options(ckpt, d / "part");
    o.resume = true;
    fm::run_sampling(o, &w);
  });
  EXPECT_EQ(bytes_of(d / "part/samples.npz"), bytes_of(d / "one/samples.npz"));
  // The shards keep each batch's straightness, so the resumed run's mean covers every sample.
  EXPECT_EQ(nlohmann::json::parse(bytes_of(d / "part/samples.json"))["mean_straightness"],
            nlohmann::json::parse(bytes_of(d / "one/samples.json"))["mean_straightness"]);
}

// Per-image bits/dim, their mean and standard error over ranks are those of one process; rank 0 alone writes them.
TEST(Ranks, LikelihoodOverRanksEqualsOneProcess) {
  FM_SKIP_ON_CUDA("threads share one GPU here; the torchrun tests cover ranks on devices");
  TempDir d;
  const auto ckpt = unet_checkpoint(d);
  fm::write_npz(d / "images.npz", {{"arr_0", fm::make_shapes(5, 8, 2).images.permute({0, 2, 3, 1}).contiguous()}});
  auto options = [&](const std::string& tag) {
    fm::EvalNllOptions o;
    o.checkpoint = ckpt;
    o.data = "npz:" + d / "images.npz";
    o.batch = 2;  // 3 batches: the second rank has none in the last round
    o.atol = o.rtol = 1e-3;
    o.dequant_samples = 2;
    o.seed = 4;
    o.device = "cpu";
    o.out = d / (tag + ".json");
    o.per_image = d / (tag + ".npy");
    return o;
  };
  const auto alone = fm::run_eval_nll(options("one"));
  ASSERT_EQ(alone.n, 5);
  fm::test::run_ranks(2, [&](fm::dist::World& w) {
    auto s = fm::run_eval_nll(options("two"), &w);
    EXPECT_TRUE(torch::equal(s.per_item, alone.per_item)) << "rank " << w.rank();
    EXPECT_EQ(s.mean, alone.mean);
    EXPECT_EQ(s.stderr_mean, alone.stderr_mean);
    EXPECT_EQ(s.mean_nfe, alone.mean_nfe);
  });
  EXPECT_EQ(bytes_of(d / "two.npy"), bytes_of(d / "one.npy"));
  auto one = nlohmann::json::parse(bytes_of(d / "one.json")), two = nlohmann::json::parse(bytes_of(d / "two.json"));
  for (const char* key : {"mean", "stderr", "n", "mean_nfe"}) {
    ASSERT_TRUE(one.contains(key)) << key;
    EXPECT_EQ(one[key], two[key]) << key;
  }
}

// FID statistics over ranks: every rank adds the gathered features batch by batch as one process does.
TEST(Ranks, FidStatisticsOverRanksAreThoseOfOneProcess) {
  FM_SKIP_ON_CUDA("threads share one GPU here; the torchrun tests cover ranks on devices");
  torch::manual_seed(3);
  fm::FidInception net;
  auto g = torch::make_generator<at::CPUGeneratorImpl>(9);
  auto images = torch::randint(0, 256, {7, 3, 16, 16}, g, torch::TensorOptions().dtype(torch::kUInt8));
  fm::FeatureOptions fo;
  fo.batch = 2;
  fo.progress = false;
  fo.keep_features = true;
  const auto alone = fm::compute_fid_features(net, images, fo);
  fm::test::run_ranks(3, [&](fm::dist::World& w) {
    auto o = fo;
    o.world = &w;
    auto r = fm::compute_fid_features(net, images, o);
    EXPECT_TRUE(torch::equal(r.stats.mu, alone.stats.mu)) << "rank " << w.rank();
    EXPECT_TRUE(torch::equal(r.stats.sigma, alone.stats.sigma)) << "rank " << w.rank();
    EXPECT_EQ(r.stats.n, 7);
    if (w.is_main()) EXPECT_TRUE(torch::equal(r.features, alone.features));
  });
}

// A new user's line, under the venv's real torchrun: fm sample with its short option -n.
TEST(Ranks, TorchrunLaunchesSampleWithTheShortOption) {
  TempDir d;
  const auto ckpt = toy_checkpoint(d);
  const std::string torchrun = torchrun_exe();
  ASSERT_TRUE(std::filesystem::exists(torchrun)) << torchrun;
  const std::string args = " sample --checkpoint " + ckpt + " -n 40 --batch 16 --solver euler --steps 2" +
                           fm::test::device_flag() + " --out ";
  auto one = fm::test::run(fm::test::fm_binary() + args + d / "one");
  ASSERT_EQ(one.code, 0) << one.output;
  auto r = fm::test::run(torchrun + " --no-python --standalone --nproc-per-node 1 " + fm::test::fm_binary() + args +
                         d / "torchrun");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(fm::read_npz(d / "torchrun/samples.npz").at("arr_0").size(0), 40);
  EXPECT_EQ(bytes_of(d / "torchrun/samples.npz"), bytes_of(d / "one/samples.npz"));
}

// ---- two processes under the venv's real torchrun (Gloo on loopback) --------------------------------------------------

TEST(Ranks, TwoProcessesSampleTheBytesOfOneAndStopTogether) {
  FM_SKIP_ON_CUDA("two ranks on one GPU; the rank logic is device-independent and tested here on the CPU");
  TempDir d;
  const auto ckpt = toy_checkpoint(d);
  const std::string args = "sample --checkpoint " + ckpt + " -n 45 --batch 8 --solver dopri5 --atol 1e-4 --rtol 1e-4"
                           " --device cpu --out ";
  auto one = fm::test::run(fm::test::fm_binary() + " " + args + d / "one");
  ASSERT_EQ(one.code, 0) << one.output;
  auto two = torchrun_fm(2, args + d / "two");
  ASSERT_EQ(two.code, 0) << two.output;
  EXPECT_EQ(count(two.output, "wrote 45 samples"), 1) << "rank 0 alone writes and reports\n" << two.output;
  EXPECT_EQ(bytes_of(d / "two/samples.npz"), bytes_of(d / "one/samples.npz"));

  // SIGUSR1 to one rank of a long run: both stop after the same round with their shards kept (exit 75 each), and a
  // resume over two ranks ends with the samples of an uninterrupted run.
  const std::string long_args = "sample --checkpoint " + ckpt + " -n 3000 --batch 8 --solver euler --steps 200" +
                                " --device cpu --seed 3 --out ";
  const std::string part = d / "part", log = d / "part.log";
  const std::string script =
      "(OMP_NUM_THREADS=1 " + torchrun_exe() + " --no-python --standalone --nproc-per-node 2 " +
      fm::test::fm_binary() + " " + long_args + part + " > " + log + " 2>&1; echo $? > " + d / "part.rc) & T=$!; " +
      "for i in $(seq 600); do ls " + part + "/shards/shard_* >/dev/null 2>&1 && break; sleep 0.1; done; " +
      "W=$(pgrep -P $(pgrep -P $T | head -1) | tail -1); kill -USR1 $W; wait";
  auto r = fm::test::run("bash -c '" + script + "'");
  const std::string out = bytes_of(log);
  // The signalled rank may be ended by torchrun's SIGTERM once the other has exited 75; its shards are kept anyway.
  EXPECT_GE(count(out, "fm: stopped by signal"), 1) << out;
  EXPECT_FALSE(std::filesystem::exists(part + "/samples.npz")) << "every rank stopped early\n" << out;
  int shards = 0;
  for (const auto& e : std::filesystem::directory_iterator(part + "/shards")) shards += e.path().extension() == ".npz";
  EXPECT_GE(shards, 1);
  EXPECT_LT(shards, 375);
  ASSERT_TRUE(std::filesystem::exists(part + "/shards/settings.json")) << out;
  auto resumed = torchrun_fm(2, long_args + part + " --resume");
  ASSERT_EQ(resumed.code, 0) << resumed.output;
  auto whole = fm::test::run(fm::test::fm_binary() + " " + long_args + d / "whole");
  ASSERT_EQ(whole.code, 0) << whole.output;
  EXPECT_EQ(bytes_of(part + "/samples.npz"), bytes_of(d / "whole/samples.npz"));
}

TEST(Ranks, TwoProcessesEvalNllAndFidFeaturesLikeOne) {
  FM_SKIP_ON_CUDA("two ranks on one GPU; the rank logic is device-independent and tested here on the CPU");
  TempDir d;
  const auto ckpt = unet_checkpoint(d);
  fm::write_npz(d / "images.npz", {{"arr_0", fm::make_shapes(5, 8, 2).images.permute({0, 2, 3, 1}).contiguous()}});
  const std::string nll = "eval-nll --checkpoint " + ckpt + " --data npz:" + d / "images.npz" +
                          " --batch 2 --atol 1e-3 --rtol 1e-3 --seed 4 --device cpu";
  auto one = fm::test::run(fm::test::fm_binary() + " " + nll + " --out " + d / "one.json --per-image " + d / "one.npy");
  ASSERT_EQ(one.code, 0) << one.output;
  auto two = torchrun_fm(2, nll + " --out " + d / "two.json --per-image " + d / "two.npy");
  ASSERT_EQ(two.code, 0) << two.output;
  EXPECT_EQ(count(two.output, "bits/dim = "), 1) << two.output;
  auto evaluate = torchrun_fm(2, "evaluate --checkpoint " + ckpt + " --no-nll --device cpu --out " + d / "eval");
  EXPECT_NE(evaluate.code, 0);
  EXPECT_NE(evaluate.output.find("fm evaluate runs in one process"), std::string::npos) << evaluate.output;
  EXPECT_EQ(bytes_of(d / "two.npy"), bytes_of(d / "one.npy"));
  auto j1 = nlohmann::json::parse(bytes_of(d / "one.json")), j2 = nlohmann::json::parse(bytes_of(d / "two.json"));
  for (const char* key : {"mean", "stderr", "n", "mean_nfe"}) EXPECT_EQ(j1.at(key), j2.at(key)) << key;

  // FID statistics with a random-weight Inception, as the FID tests use.
  torch::manual_seed(3);
  fm::FidInception net;
  std::vector<std::pair<std::string, torch::Tensor>> weights;
  for (auto& p : net->named_parameters()) weights.emplace_back(p.key(), p.value().detach());
  for (auto& b : net->named_buffers())
    if (b.key().find("num_batches_tracked") == std::string::npos) weights.emplace_back(b.key(), b.value());
  fm::write_npz(d / "inception.npz", weights);
  const std::string fid = "fid-features --weights " + d / "inception.npz" + " --images npz:" + d / "images.npz" +
                          " --batch 2 --device cpu --out ";
  auto f1 = fm::test::run(fm::test::fm_binary() + " " + fid + d / "one_stats.npz");
  ASSERT_EQ(f1.code, 0) << f1.output;
  auto f2 = torchrun_fm(2, fid + d / "two_stats.npz");
  ASSERT_EQ(f2.code, 0) << f2.output;
  EXPECT_EQ(count(f2.output, "wrote statistics of 5 images"), 1) << f2.output;
  auto s1 = fm::read_npz(d / "one_stats.npz"), s2 = fm::read_npz(d / "two_stats.npz");
  EXPECT_TRUE(torch::equal(s1.at("mu"), s2.at("mu")));
  EXPECT_TRUE(torch::equal(s1.at("sigma"), s2.at("sigma")));
}
