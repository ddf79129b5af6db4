// Evaluation: `fm evaluate` against the separate commands it is built from (eval-nll's bits/dim; sample + fid-features
// + fid with a random-weight Inception), the data a checkpoint was trained on as the default data, and the soundness
// of the importance-weighted bound with Hutchinson's estimator against the exact divergence.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include "checkpoint/checkpoint.h"
#include "config/config.h"
#include "data/eval_data.h"
#include "data/shapes.h"
#include "eval/eval_nll.h"
#include "eval/evaluate.h"
#include "fid/inception.h"
#include "io/npy.h"
#include "likelihood/likelihood.h"
#include "nn/velocity_field.h"
#include "test_util.h"
#include "train/trainer.h"
#include "util/error.h"

using fm::test::TempDir;

namespace {

// The shared-probe measurement: images, dequantisation draws and training steps (see the test).
constexpr int64_t kProbeImages = 64, kProbeDraws = 4, kProbeTrainSteps = 200;
constexpr double kProbeTolerance = 1e-4;  // dopri5 atol = rtol, the same for every estimator compared

using fm::test::run;

// A class-conditional U-Net on shapes of side `res`, trained for `steps` (seconds on a CPU).
std::string tiny_shapes_checkpoint(const TempDir& dir, int64_t res, int64_t steps) {
  fm::Config c;
  c.device = "cpu";
  c.data.format = fm::DataFormat::shapes;
  c.data.path = "64";
  c.data.resolution = res;
  c.model.type = fm::ModelType::unet;
  c.model.unet = fm::test::tiny_unet({1, 2});
  c.model.unet.num_classes = 3;
  c.train.steps = steps;
  c.train.batch_size = 8;
  c.train.lr = 2e-3;
  c.train.log_every = steps;
  c.train.ckpt_every = steps;
  c.sample.steps = 2;
  c.sample.n = 4;
  return fm::train(c, {dir / "run", ""}).checkpoint;
}

// Random FID Inception weights (the network's own initialisation) as the export script lays them out.
std::string random_inception_weights(const TempDir& dir) {
  torch::manual_seed(3);
  fm::FidInception net;
  std::vector<std::pair<std::string, torch::Tensor>> arrays;
  for (auto& p : net->named_parameters()) arrays.emplace_back(p.key(), p.value().detach());
  for (auto& b : net->named_buffers())
    if (b.key().find("num_batches_tracked") == std::string::npos) arrays.emplace_back(b.key(), b.value());
  fm::write_npz(dir / "inception.npz", arrays);
  return dir / "inception.npz";
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

}  // namespace

TEST(EvalData, DefaultIsTheCheckpointsDataAndSpecsInheritTheModelResolution) {
  fm::DataConfig trained;
  trained.format = fm::DataFormat::cifar10;
  trained.path = "/data/c10";
  trained.limit = 500;
  trained.hflip = true;
  auto d = fm::resolve_eval_data("", trained, {3, 32, 32}, fm::Split::test);
  EXPECT_TRUE(d.from_checkpoint);
  EXPECT_EQ(d.spec, "cifar10:/data/c10");
  EXPECT_EQ(d.config.split, fm::Split::test);
  EXPECT_EQ(d.config.limit, 0);  // the training subset is not the evaluation set
  EXPECT_FALSE(d.config.hflip);
  EXPECT_NE(d.description.find("test split"), std::string::npos) << d.description;
  EXPECT_NE(d.description.find("the data the checkpoint was trained on"), std::string::npos) << d.description;

  // shapes has no split: the training images, and the description says so.
  fm::DataConfig shapes;
  shapes.format = fm::DataFormat::shapes;
  shapes.path = "20000";
  shapes.resolution = 16;
  auto s = fm::resolve_eval_data("", shapes, {3, 16, 16}, fm::Split::test);
  EXPECT_EQ(s.config.resolution, 16);
  EXPECT_NE(s.description.find("has no test split"), std::string::npos) << s.description;
  // A spec without a resolution of its own takes the model's (the new user's `--data shapes:200` on the demo).
  auto cli = fm::resolve_eval_data("shapes:200", shapes, {3, 16, 16}, fm::Split::test);
  EXPECT_FALSE(cli.from_checkpoint);
  EXPECT_EQ(cli.config.path, "200");
  EXPECT_EQ(cli.config.resolution, 16);
  // Formats that are not resized keep their size, and a mismatch names both sizes.
  auto npz = fm::resolve_eval_data("npz:/x.npz", shapes, {3, 16, 16}, fm::Split::test);
  EXPECT_EQ(npz.config.resolution, 0);
  try {
    fm::check_eval_data_shape(npz, {3, 32, 32}, {3, 16, 16}, "ck.pt");
    FAIL() << "expected InputError";
  } catch (const fm::InputError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("3x32x32"), std::string::npos) << msg;
    EXPECT_NE(msg.find("3x16x16"), std::string::npos) << msg;
    EXPECT_NE(msg.find("ck.pt"), std::string::npos) << msg;
  }
  EXPECT_THROW(fm::resolve_eval_data("nope:1", shapes, {3, 16, 16}, fm::Split::test), fm::InputError);
}

TEST(EvalData, ShapesCheckpointEvaluatesOnItsOwnDataAndOnASpecWithoutResolution) {
  // The new user's case: a 16x16 shapes model, evaluated with --data omitted and with `--data shapes:N`, which makes
  // 32x32 images by default; a 32x32 npz set fails naming both sizes.
  TempDir dir;
  auto ckpt = tiny_shapes_checkpoint(dir, 16, 2);
  const std::string fm_bin = fm::test::fm_binary();
  const std::string common = " --checkpoint " + ckpt + " --limit 4 --batch 4 --atol 1e-3 --rtol 1e-3 --device cpu";
  auto r1 = run(fm_bin + " eval-nll" + common + " --out " + (dir / "own.json"), dir);
  ASSERT_EQ(r1.code, 0) << r1.err;
  EXPECT_NE(r1.err.find("eval-nll data: shapes:64 at 16x16 (the data the checkpoint was trained on"),
            std::string::npos) << r1.err;
  auto own = read_json(dir / "own.json");
  EXPECT_EQ(own["data"], "shapes:64");
  EXPECT_EQ(own["n"], 4);

  auto r2 = run(fm_bin + " eval-nll" + common + " --data shapes:8", dir);
  ASSERT_EQ(r2.code, 0) << r2.err;
  EXPECT_NE(r2.err.find("shapes:8 at 16x16 (from the command line"), std::string::npos) << r2.err;

  auto big = fm::make_shapes(4, 32, 1).images.permute({0, 2, 3, 1}).contiguous();
  fm::write_npz(dir / "big.npz", {{"arr_0", big}});
  auto r3 = run(fm_bin + " eval-nll" + common + " --data npz:" + (dir / "big.npz"), dir);
  EXPECT_EQ(r3.code, 2) << r3.err;
  EXPECT_EQ(std::count(r3.err.begin(), r3.err.end(), '\n'), 1) << r3.err;
  EXPECT_NE(r3.err.find("3x32x32"), std::string::npos) << r3.err;
  EXPECT_NE(r3.err.find("3x16x16"), std::string::npos) << r3.err;
}

TEST(Evaluate, MatchesEvalNllAndSampleThenFidAndSaysWhatItSkipped) {
  TempDir dir;
  auto ckpt = tiny_shapes_checkpoint(dir, 8, 20);
  auto weights = random_inception_weights(dir);
  const std::string fm_bin = fm::test::fm_binary();
  const std::string tol = " --atol 1e-4 --rtol 1e-4 --device cpu --seed 7";

  // The separate commands: fid-features of the checkpoint's own data (no --images), eval-nll, sample, fid.
  auto rf = run(fm_bin + " fid-features --checkpoint " + ckpt + " --weights " + weights + " --limit 12 --batch 6 " +
                    "--device cpu --out " + (dir / "ref.npz"), dir);
  ASSERT_EQ(rf.code, 0) << rf.err;
  EXPECT_NE(rf.err.find("fid-features data: shapes:64 at 8x8"), std::string::npos) << rf.err;
  auto rn = run(fm_bin + " eval-nll --checkpoint " + ckpt + " --limit 6 --batch 6" + tol + " --out " +
                    (dir / "nll.json"), dir);
  ASSERT_EQ(rn.code, 0) << rn.err;
  auto rs = run(fm_bin + " sample --checkpoint " + ckpt + " --num-samples 6 --batch 3 --solver dopri5" + tol + " --out " +
                    (dir / "sep_dopri5"), dir);
  ASSERT_EQ(rs.code, 0) << rs.err;
  auto rs2 = run(fm_bin + " sample --checkpoint " + ckpt + " --num-samples 6 --batch 3 --solver euler --steps 3 --device cpu "
                     "--seed 7 --out " + (dir / "sep_euler"), dir);
  ASSERT_EQ(rs2.code, 0) << rs2.err;
  auto fid_of = [&](const std::string& samples) {
    auto r = run(fm_bin + " fid " + samples + " " + (dir / "ref.npz") + " --weights " + weights +
                     " --batch 6 --device cpu --json", dir);
    EXPECT_EQ(r.code, 0) << r.err;
    return nlohmann::json::parse(r.out)["fid"].get<double>();
  };
  auto rs3 = run(fm_bin + " sample --checkpoint " + ckpt + " --num-samples 6 --batch 3 --solver euler_maruyama "
                     "--steps 4 --device cpu --seed 7 --out " + (dir / "sep_sde"), dir);
  ASSERT_EQ(rs3.code, 0) << rs3.err;
  double fid_dopri5 = fid_of(dir / "sep_dopri5/samples.npz"), fid_euler = fid_of(dir / "sep_euler/samples.npz");
  double fid_sde = fid_of(dir / "sep_sde/samples.npz");

  auto re = run(fm_bin + " evaluate --checkpoint " + ckpt + " --fid-ref " + (dir / "ref.npz") + " --fid-weights " +
                    weights + " --num-samples 6 --batch 3 --fid-batch 6 --nll-limit 6 --nll-batch 6 --fixed-steps 3 " +
                    "--sde-steps 4" + tol + " --samples-dir " + (dir / "eval_samples") + " --out " + (dir / "eval.json"), dir);
  ASSERT_EQ(re.code, 0) << re.err;
  auto j = read_json(dir / "eval.json");
  auto nll = read_json(dir / "nll.json");
  // The same code with the same seeds: the same figures.
  EXPECT_DOUBLE_EQ(j["nll"]["mean"].get<double>(), nll["mean"].get<double>());
  EXPECT_DOUBLE_EQ(j["nll"]["stderr"].get<double>(), nll["stderr"].get<double>());
  EXPECT_EQ(j["nll"]["data"], "shapes:64");
  EXPECT_EQ(j["nll"]["probe"], "rademacher");
  EXPECT_NEAR(j["dopri5"]["fid"].get<double>(), fid_dopri5, 1e-6 * std::max(1.0, fid_dopri5));
  EXPECT_GT(fid_dopri5, 0);
  EXPECT_GT(j["dopri5"]["mean_nfe"].get<double>(), 6);  // dopri5: at least one step of 6 evaluations
  EXPECT_EQ(j["dopri5"]["n"], 6);
  ASSERT_EQ(j["fixed"].size(), 2u);
  EXPECT_EQ(j["fixed"][0]["solver"], "euler");
  EXPECT_EQ(j["fixed"][0]["mean_nfe"].get<double>(), 3.0);
  EXPECT_NEAR(j["fixed"][0]["fid"].get<double>(), fid_euler, 1e-6 * std::max(1.0, fid_euler));
  // The SDE row beside the ODE rows: fm sample's euler_maruyama samples with the checkpoint's diffusion.
  EXPECT_EQ(j["fixed"][1]["solver"], "euler_maruyama");
  EXPECT_EQ(j["fixed"][1]["mean_nfe"].get<double>(), 4.0);
  EXPECT_EQ(j["fixed"][1]["diffusion"], "sigma");
  EXPECT_NEAR(j["fixed"][1]["fid"].get<double>(), fid_sde, 1e-6 * std::max(1.0, fid_sde));
  EXPECT_NE(fid_sde, fid_euler);
  ASSERT_EQ(j["skipped"].size(), 1u) << j["skipped"];
  EXPECT_EQ(j["skipped"][0].get<std::string>().rfind("precision and recall: no --fid-ref-features", 0), 0u);
  // The reference is named with what it is of, and each FID with its seed and statistics beside its samples.
  EXPECT_EQ(j["fid_ref"]["images"], "shapes:64");
  EXPECT_EQ(j["fid_ref"]["n"], 12);
  EXPECT_EQ(j["fid_ref"]["resize"], "pytorch-fid");
  EXPECT_EQ(j["fid_ref"]["resolution"], nlohmann::json({8, 8}));
  EXPECT_EQ(j["dopri5"]["runs"][0]["seed"], 7);
  EXPECT_EQ(j["dopri5"]["runs"][0]["stats"], dir / "eval_samples/dopri5/seed_7/fid_stats.npz");
  EXPECT_TRUE(j["dopri5"]["fid_std"].is_null()) << "one seed has no spread";
  EXPECT_NE(re.out.find("- FID reference: " + dir / "ref.npz" + ", shapes:64 (no split, 12 images, resize "
                        "pytorch-fid, 8x8)"), std::string::npos) << re.out;
  // The Markdown row on stdout: header, separator, the row with NLL, FID and NFE as the JSON has them.
  char row[256];
  std::snprintf(row, sizeof row, "| ckpt_000000020.pt (step 20) | %.2f | %.2f | %.0f | %.2f | %.2f |",
                j["nll"]["mean"].get<double>(), j["dopri5"]["fid"].get<double>(),
                j["dopri5"]["mean_nfe"].get<double>(), j["fixed"][0]["fid"].get<double>(),
                j["fixed"][1]["fid"].get<double>());
  EXPECT_EQ(re.out.rfind("| Checkpoint | NLL (bits/dim) | FID | NFE | FID euler 3 | FID euler_maruyama 4 |\n|---|", 0),
            0u)
      << re.out;
  EXPECT_NE(re.out.find(row), std::string::npos) << re.out;
  EXPECT_NE(re.out.find("Hutchinson (rademacher probe), K = 1"), std::string::npos) << re.out;
  EXPECT_EQ(j["markdown"], re.out);

  // Without FID inputs: bits/dim and NFE, and the skip is said in the JSON and the table notes.
  auto rk = run(fm_bin + " evaluate --checkpoint " + ckpt + " --num-samples 3 --batch 3 --nll-limit 3 --nll-batch 3 "
                    "--fixed-steps 2" +
                    tol + " --samples-dir " + (dir / "eval_nofid") + " --out " + (dir / "nofid.json"), dir);
  ASSERT_EQ(rk.code, 0) << rk.err;
  auto k = read_json(dir / "nofid.json");
  EXPECT_FALSE(k["dopri5"].contains("fid"));
  EXPECT_GT(k["dopri5"]["mean_nfe"].get<double>(), 6);
  EXPECT_TRUE(k["fixed"].empty());  // a fixed-step budget without FID is not sampled
  ASSERT_EQ(k["skipped"].size(), 2u);
  EXPECT_EQ(k["skipped"][0].get<std::string>().rfind("FID: no --fid-ref", 0), 0u) << k["skipped"];
  EXPECT_EQ(k["skipped"][1].get<std::string>().rfind("fixed-step FIDs", 0), 0u) << k["skipped"];
  EXPECT_NE(rk.out.find("- skipped: FID: no --fid-ref"), std::string::npos) << rk.out;

  // One FID input without the other is bad usage, before any work.
  auto rb = run(fm_bin + " evaluate --checkpoint " + ckpt + " --fid-ref " + (dir / "ref.npz") + " --device cpu", dir);
  EXPECT_EQ(rb.code, 2);
  EXPECT_NE(rb.err.find("--fid-weights"), std::string::npos) << rb.err;
}

// An evaluation into an --out that an earlier one wrote is refused before any work unless --resume or --overwrite.
// --resume keeps the rows it finds and the finished samples, computes only what is missing, keeps rows it is not
// asked for (a results file never loses rows) and refuses other settings naming the option; --overwrite starts afresh.
TEST(Evaluate, ResumeKeepsFinishedRowsAndOverwriteStartsAfresh) {
  TempDir dir;
  auto ckpt = tiny_shapes_checkpoint(dir, 8, 20);
  const std::string args = fm::test::fm_binary() + " evaluate --checkpoint " + ckpt +
                           " --num-samples 3 --batch 3 --nll-limit 3 --nll-batch 3 --atol 1e-3 --rtol 1e-3 "
                           "--device cpu --samples-dir " + (dir / "samples") + " --out " + (dir / "eval.json");
  auto r = run(args, dir);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto first = read_json(dir / "eval.json");
  ASSERT_TRUE(first.contains("nll") && first.contains("dopri5")) << first;

  r = run(args, dir);
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("--resume"), std::string::npos) << r.err;
  EXPECT_EQ(read_json(dir / "eval.json"), first) << "refused before any work";

  // As if stopped after the NLL: the dopri5 row is gone, and the NLL row is marked to show whether it is kept.
  auto partial = first;
  partial.erase("dopri5");
  partial["nll"]["mean"] = 123.0;
  std::ofstream(dir / "eval.json") << partial.dump(2);
  r = run(args + " --resume", dir);
  ASSERT_EQ(r.code, 0) << r.err;
  auto resumed = read_json(dir / "eval.json");
  EXPECT_EQ(resumed["nll"]["mean"], 123.0) << "a finished row is kept, not recomputed";
  EXPECT_EQ(resumed["dopri5"]["mean_nfe"], first["dopri5"]["mean_nfe"]);
  EXPECT_NE(r.err.find("holds the finished samples of these settings"), std::string::npos) << r.err;

  r = run(args + " --resume --no-nll", dir);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_json(dir / "eval.json")["nll"]["mean"], 123.0) << "rows not asked for stay";

  r = run(args + " --resume --seed 8", dir);
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("fm: error: --seed: --resume continues"), std::string::npos) << r.err;

  r = run(args + " --overwrite", dir);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(read_json(dir / "eval.json")["nll"]["mean"], first["nll"]["mean"]);
}

// --seeds K: K sample sets per setting from seeds seed, seed + 1, ..., each in its own subfolder with its statistics
// beside it; the row has FID mean, standard deviation and minimum over them, and precision and recall against the
// reference's features, each the figure fm fid gives for that set. A resume keeps finished seeds. A reference of
// another resolution is refused before any sampling.
TEST(Evaluate, SeedsGiveMeanSpreadAndMinimumWithPrecisionRecall) {
  TempDir dir;
  auto ckpt = tiny_shapes_checkpoint(dir, 8, 20);
  auto weights = random_inception_weights(dir);
  const std::string fm_bin = fm::test::fm_binary();
  auto rf = run(fm_bin + " fid-features --checkpoint " + ckpt + " --weights " + weights + " --limit 12 --batch 12 " +
                    "--device cpu --out " + (dir / "ref.npz") + " --save-features " + (dir / "ref_feats.npy"), dir);
  ASSERT_EQ(rf.code, 0) << rf.err;
  const std::string args = fm_bin + " evaluate --checkpoint " + ckpt + " --fid-ref " + (dir / "ref.npz") +
                           " --fid-weights " + weights + " --fid-ref-features " + (dir / "ref_feats.npy") +
                           " --no-nll --num-samples 6 --batch 6 --fid-batch 6 --seeds 2 --seed 7 --atol 1e-3 "
                           "--rtol 1e-3 --device cpu --samples-dir " + (dir / "samples") + " --out " +
                           (dir / "eval.json");
  auto re = run(args, dir);
  ASSERT_EQ(re.code, 0) << re.err;
  auto j = read_json(dir / "eval.json");
  const auto& row = j["dopri5"];
  ASSERT_EQ(row["runs"].size(), 2u) << row;
  EXPECT_EQ(j["skipped"], nlohmann::json({"NLL: --no-nll"}));
  std::vector<double> fids;
  for (int i = 0; i < 2; ++i) {
    const auto& run_i = row["runs"][i];
    const std::string seed_dir = dir / ("samples/dopri5/seed_" + std::to_string(7 + i));
    EXPECT_EQ(run_i["seed"], 7 + i);
    EXPECT_EQ(run_i["samples"], seed_dir + "/samples.npz");
    EXPECT_EQ(run_i["stats"], seed_dir + "/fid_stats.npz");
    auto record = read_json(seed_dir + "/fid_stats.json");
    EXPECT_EQ(record["images"], "npz:" + seed_dir + "/samples.npz");
    EXPECT_EQ(record["n"], 6);
    fids.push_back(run_i["fid"].get<double>());
  }
  {
    // fm fid on the first seed's samples against the reference's features: the same FID, precision and recall.
    const auto& first = row["runs"][0];
    auto rf2 = run(fm_bin + " fid " + first["samples"].get<std::string>() + " " + (dir / "ref_feats.npy") +
                       " --weights " + weights + " --batch 6 --device cpu --json", dir);
    ASSERT_EQ(rf2.code, 0) << rf2.err;
    auto fj = nlohmann::json::parse(rf2.out);
    EXPECT_NEAR(first["fid"].get<double>(), fj["fid"].get<double>(), 1e-6 * fj["fid"].get<double>());
    EXPECT_EQ(first["precision"].get<double>(), fj["precision"].get<double>());
    EXPECT_EQ(first["recall"].get<double>(), fj["recall"].get<double>());
  }
  EXPECT_NE(fids[0], fids[1]) << "distinct seeds give distinct sample sets";
  EXPECT_DOUBLE_EQ(row["fid"].get<double>(), (fids[0] + fids[1]) / 2);
  EXPECT_NEAR(row["fid_std"].get<double>(), std::abs(fids[0] - fids[1]) / std::sqrt(2.0), 1e-12);
  EXPECT_EQ(row["fid_min"].get<double>(), std::min(fids[0], fids[1]));
  EXPECT_DOUBLE_EQ(row["precision"].get<double>(),
                   (row["runs"][0]["precision"].get<double>() + row["runs"][1]["precision"].get<double>()) / 2);
  char cell[96];
  std::snprintf(cell, sizeof cell, "| %.2f +- %.2f, min %.2f | %.0f | %.3f | %.3f |", row["fid"].get<double>(),
                row["fid_std"].get<double>(), row["fid_min"].get<double>(), row["mean_nfe"].get<double>(),
                row["precision"].get<double>(), row["recall"].get<double>());
  EXPECT_NE(re.out.find(cell), std::string::npos) << re.out;
  EXPECT_NE(re.out.find("| FID (2 seeds: mean +- sd, min) | NFE | Precision | Recall |"), std::string::npos) << re.out;
  EXPECT_NE(re.out.find("seeds 7, 8"), std::string::npos) << re.out;

  // As if stopped after the first seed, whose FID is marked: the resume keeps it and computes only the second.
  auto partial = j;
  partial["dopri5"]["runs"].erase(1);
  partial["dopri5"]["runs"][0]["fid"] = 100.0;
  std::ofstream(dir / "eval.json") << partial.dump(2);
  re = run(args + " --resume", dir);
  ASSERT_EQ(re.code, 0) << re.err;
  auto resumed = read_json(dir / "eval.json");
  EXPECT_EQ(resumed["dopri5"]["runs"][0]["fid"], 100.0);
  EXPECT_DOUBLE_EQ(resumed["dopri5"]["runs"][1]["fid"].get<double>(), fids[1]);
  EXPECT_DOUBLE_EQ(resumed["dopri5"]["fid"].get<double>(), (100.0 + fids[1]) / 2);

  // A 32x32 reference for 8x8 samples: refused naming both, before any sampling.
  auto r32 = run(fm_bin + " fid-features --images shapes:4 --weights " + weights + " --batch 4 --device cpu --out " +
                     (dir / "ref32.npz"), dir);
  ASSERT_EQ(r32.code, 0) << r32.err;
  auto rm = run(fm_bin + " evaluate --checkpoint " + ckpt + " --fid-ref " + (dir / "ref32.npz") + " --fid-weights " +
                    weights + " --no-nll --num-samples 6 --device cpu --samples-dir " + (dir / "samples32"), dir);
  EXPECT_EQ(rm.code, 2) << rm.err;
  EXPECT_NE(rm.err.find("8x8"), std::string::npos) << rm.err;
  EXPECT_NE(rm.err.find("32x32"), std::string::npos) << rm.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "samples32/dopri5")) << "refused before sampling";
}

namespace {

// 4x4 RGB images (D = 48, so the exact divergence is affordable: 48 backward passes) from shapes, 2x2-averaged, and
// a U-Net without down-sampling trained on them long enough that its Jacobian is far from zero.
std::string tiny_4x4_checkpoint(const TempDir& dir, int64_t steps) {
  auto small = torch::avg_pool2d(fm::make_shapes(512, 8, 5).images.to(torch::kFloat32), 2).round().to(torch::kUInt8);
  fm::write_npz(dir / "tiny4.npz", {{"arr_0", small.permute({0, 2, 3, 1}).contiguous()}});
  fm::Config c;
  c.device = "cpu";
  c.data.format = fm::DataFormat::npz;
  c.data.path = dir / "tiny4.npz";
  c.model.type = fm::ModelType::unet;
  c.model.unet = fm::test::tiny_unet();
  c.train.steps = steps;
  c.train.batch_size = 64;
  c.train.lr = 2e-3;
  c.train.ema_decay = 0.99;
  c.train.log_every = steps;
  c.train.ckpt_every = steps;
  c.sample.steps = 2;
  c.sample.n = 4;
  return fm::train(c, {dir / "run4", ""}).checkpoint;
}

struct PairedBias {
  double mean = 0, se = 0;  // of Hutchinson minus exact bits/dim, per image
};
PairedBias paired(const torch::Tensor& hutch, const torch::Tensor& exact) {
  auto d = (hutch - exact).to(torch::kFloat64);
  return {d.mean().item<double>(), d.std().item<double>() / std::sqrt(static_cast<double>(d.size(0)))};
}

}  // namespace

// With K dequantisation draws, log-mean-exp of K Hutchinson estimates each with its own probe is
// optimistic by Jensen (the noise of K independent probes raises the mean of a convex function). eval-nll shares one
// probe across an image's K draws. Judged per image against the exact divergence on the same draws (paired, so the
// spread between images cancels), the shared-probe bound's mean error is within its standard error; the
// independent-probe estimator, computed here on common draws, is clearly optimistic against it, which shows that this
// model and N give the comparison the power to see the bias.
TEST(EvalNll, ImportanceWeightedBoundWithHutchinsonIsNotOptimistic) {
  TempDir dir;
  auto ckpt = tiny_4x4_checkpoint(dir, kProbeTrainSteps);
  const int64_t n = kProbeImages, k = kProbeDraws;
  fm::EvalNllOptions o;
  o.checkpoint = ckpt;
  o.limit = n;
  o.batch = n;
  o.dequant_samples = k;
  o.atol = o.rtol = kProbeTolerance;
  o.device = "cpu";
  o.seed = 11;
  o.divergence = fm::Divergence::exact;
  auto exact = fm::run_eval_nll(o);
  o.divergence = fm::Divergence::hutchinson;
  auto shared = fm::run_eval_nll(o);
  auto b = paired(shared.per_item, exact.per_item);
  RecordProperty("shared_probe_bias_bpd", std::to_string(b.mean));
  RecordProperty("shared_probe_bias_se_bpd", std::to_string(b.se));
  EXPECT_LT(std::abs(b.mean), 2 * b.se) << "shared-probe bias " << b.mean << " +- " << b.se;

  // The independent-probe estimator, from the library functions on the same images: K draws with K independent probes,
  // against one probe shared by the K draws (unbiased, as just shown), on the same draws.
  fm::CheckpointReader ck(ckpt, torch::kCPU);
  auto model = fm::make_velocity_field(ck.config().model, ck.sample_shape());
  ck.load_module("ema", *model);
  model->eval();
  for (auto& p : model->parameters()) p.requires_grad_(false);
  fm::VelocityFn vf = [&](const torch::Tensor& t, const torch::Tensor& x) { return (*model)(t, x, {}); };
  auto images = fm::read_npz(dir / "tiny4.npz").at("arr_0").permute({0, 3, 1, 2}).narrow(0, 0, n).contiguous();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(99);
  fm::LikelihoodOptions lo;
  lo.atol = lo.rtol = kProbeTolerance;
  auto one_probe = fm::make_probe(fm::Probe::rademacher, {n, 3, 4, 4}, gen);
  std::vector<torch::Tensor> lp_shared, lp_fresh;
  for (int64_t i = 0; i < k; ++i) {
    auto y = fm::dequantize(images, torch::rand(images.sizes(), gen, torch::kFloat64).to(torch::kFloat32));
    lp_shared.push_back(fm::log_likelihood(vf, y, lo, one_probe).log_p);
    lp_fresh.push_back(fm::log_likelihood(vf, y, lo, fm::make_probe(fm::Probe::rademacher, {n, 3, 4, 4}, gen)).log_p);
  }
  auto bpd = [&](const std::vector<torch::Tensor>& lp) {
    return fm::bits_per_dim(fm::logmeanexp(torch::stack(lp, 1), 1), 48);
  };
  auto fresh = paired(bpd(lp_fresh), bpd(lp_shared));
  RecordProperty("independent_minus_shared_bpd", std::to_string(fresh.mean));
  RecordProperty("independent_minus_shared_se_bpd", std::to_string(fresh.se));
  EXPECT_LT(fresh.mean, -3 * fresh.se) << "independent probes: " << fresh.mean << " +- " << fresh.se;
  std::printf("bits/dim exact %.5f; per image, shared-probe Hutchinson minus exact %.5f +- %.5f; independent probes "
              "minus shared probe %.5f +- %.5f (N = %lld, K = %lld)\n", exact.mean, b.mean, b.se, fresh.mean, fresh.se,
              static_cast<long long>(n), static_cast<long long>(k));
}
