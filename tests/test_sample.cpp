#include <filesystem>

#include <gtest/gtest.h>

#include "io/npy.h"
#include "sample/sample_run.h"
#include "test_util.h"
#include "train/trainer.h"
#include "util/error.h"

using fm::test::TempDir;

namespace {

std::string tiny_toy_checkpoint(const TempDir& d) {
  fm::Config c;
  c.device = "cpu";
  c.model.mlp.hidden = 16;
  c.model.mlp.depth = 2;
  c.train.steps = 5;
  c.train.batch_size = 32;
  c.sample.n = 50;
  c.sample.steps = 2;
  return fm::train(c, {d / "run", ""}).checkpoint;
}

fm::SampleOptions options(const std::string& ckpt, const std::string& out, int64_t batch) {
  fm::SampleOptions o;
  o.checkpoint = ckpt;
  o.out_dir = out;
  o.device = "cpu";
  o.n = 300;
  o.batch = batch;
  o.seed = 7;
  o.solve.solver = "heun";
  o.solve.steps = 5;
  return o;
}

torch::Tensor samples(const std::string& out) { return fm::read_npz(out + "/samples.npz", {"arr_0"}).at("arr_0"); }

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

TEST(Sample, ResumeKeepsFinishedShards) {
  TempDir d;
  auto ckpt = tiny_toy_checkpoint(d);
  fm::run_sampling(options(ckpt, d / "full", 100));
  // An interrupted run: the first shard finished (marked here by zeros, which sampling never produces exactly).
  std::filesystem::create_directories(d / "part/shards");
  fm::write_npz(d / "part/shards/shard_000000000_000100.npz", {{"arr_0", torch::zeros({100, 2})}});
  EXPECT_THROW(fm::run_sampling(options(ckpt, d / "part", 100)), fm::InputError) << "refuses without --resume";
  auto o = options(ckpt, d / "part", 100);
  o.resume = true;
  fm::run_sampling(o);
  auto full = samples(d / "full"), part = samples(d / "part");
  EXPECT_TRUE(torch::equal(part.narrow(0, 0, 100), torch::zeros({100, 2})));
  EXPECT_TRUE(torch::equal(part.narrow(0, 100, 200), full.narrow(0, 100, 200)));
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
