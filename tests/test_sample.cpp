#include <cmath>
#include <filesystem>

#include <gtest/gtest.h>

#include "data/dataset.h"
#include "io/npy.h"
#include "sample/sample_run.h"
#include "sample/straightness.h"
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

TEST(Sample, GuidanceMatchesTheClosedFormOfGaussianClasses) {
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto means = torch::tensor({1.0, -2.0, 0.5, 3.0, -1.0, -0.5, 0.0, 0.0}, f64).view({4, 2});  // 3 classes + null
  const double s = 0.5;
  ClassGaussians model(means, s);
  torch::manual_seed(0);
  auto x0 = torch::randn({6, 2}, f64);
  auto labels = torch::tensor({0, 1, 2, 0, 1, 2}, torch::kLong);
  fm::SolveSettings rk4{"rk4", 40};
  for (double w : {0.0, 1.5, 4.0}) {
    model.seen.clear();
    auto x1 = fm::generate(model, x0, labels, rk4, w).x;
    auto mu = (1 + w) * means.index_select(0, labels) - w * means[3];
    EXPECT_LT((x1 - (mu + s * x0)).abs().max().item<double>(), 1e-6) << "w = " << w;
    // Unguided sampling calls the model once per evaluation with the classes; guided, once with the classes and the
    // null label stacked.
    ASSERT_FALSE(model.seen.empty());
    auto expect = w == 0.0 ? labels : torch::cat({labels, torch::full({6}, 3, torch::kLong)});
    for (const auto& l : model.seen) ASSERT_TRUE(torch::equal(l, expect)) << l;
  }
}

TEST(Sample, ClassConditionalUNetSamplesEveryClassWithGuidance) {
  TempDir d;
  fm::Config c;
  c.device = "cpu";
  c.data = fm::parse_data_spec("shapes:48");
  c.data.resolution = 16;
  c.model.type = "unet";
  c.model.unet.model_channels = 32;
  c.model.unet.num_res_blocks = 1;
  c.model.unet.channel_mult = {1, 2};
  c.model.unet.attention_resolutions = {};
  c.model.unet.num_classes = 3;
  c.train.steps = 3;
  c.train.batch_size = 8;
  c.sample.steps = 2;
  auto ckpt = fm::train(c, {d / "run", ""}).checkpoint;
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
