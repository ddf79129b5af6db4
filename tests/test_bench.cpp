// The benchmark's arithmetic and command: the U-Net FLOP count against PyTorch's own counter on torchcfm's network,
// and `fm bench` run end to end on a tiny network (what it prints, not how fast: no timed tests).
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "bench/flops.h"
#include "config/config.h"
#include "test_util.h"

namespace fm {
namespace {

using test::TempDir;

std::string write_config(const Config& cfg, const std::string& path) {
  std::ofstream(path) << to_json(cfg).dump(2);
  return path;
}

Config unet_config(const UNetConfig& u) {
  Config cfg;
  cfg.model.type = fm::ModelType::unet;
  cfg.model.unet = u;
  cfg.device = "cpu";
  return cfg;
}

std::vector<nlohmann::json> json_lines(const std::string& text) {
  std::vector<nlohmann::json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') out.push_back(nlohmann::json::parse(line));
  return out;
}

// FlopCounterMode counts 2 per multiply-add of every convolution, matmul and attention product that torchcfm's U-Net
// runs; fm's count is derived from the config alone, so the two agree only if fm walks the same layers at the same
// resolutions.
TEST(Bench, UNetFlopsMatchTorchFlopCounter) {
  FM_SKIP_ON_CUDA("the reference counts on the CPU");
  struct Case {
    std::string name;
    UNetConfig u;
    std::vector<int64_t> shape;
  };
  std::vector<Case> cases;
  UNetConfig smoke;  // configs/cifar10_cpu_smoke.json's network
  smoke.model_channels = 32;
  smoke.num_res_blocks = 1;
  smoke.channel_mult = {1, 2, 2};
  smoke.attention_resolutions = {8};
  smoke.num_heads = 1;
  smoke.num_head_channels = -1;
  cases.push_back({"smoke", smoke, {3, 32, 32}});
  UNetConfig film = smoke;  // scale-shift norm, residual up/down blocks, attention at two widths, 2 blocks, 4 heads
  film.num_res_blocks = 2;
  film.channel_mult = {1, 2};
  film.attention_resolutions = {8, 4};
  film.use_scale_shift_norm = true;
  film.resblock_updown = true;
  film.num_head_channels = 16;
  cases.push_back({"film_updown", film, {3, 8, 8}});
  UNetConfig pool = smoke;  // average-pool / plain nearest resampling, a non-square two-channel image
  pool.conv_resample = false;
  pool.channel_mult = {1, 1, 2};
  pool.attention_resolutions = {4};
  cases.push_back({"pool", pool, {2, 16, 8}});

  TempDir dir("bench_flops");
  std::string cmd = test::python() + " " + test::source_dir() + "/scripts/bench_ref.py flops --batch 3";
  for (const auto& c : cases)
    cmd += " --case " + write_config(unet_config(c.u), dir / (c.name + ".json")) + ":" + std::to_string(c.shape[0]) +
           "," + std::to_string(c.shape[1]) + "," + std::to_string(c.shape[2]);
  auto r = test::run_stdout(cmd);
  if (r.code == 77) GTEST_SKIP() << "torchcfm is not installed in the venv";
  ASSERT_EQ(r.code, 0) << cmd << "\n" << r.output;
  std::istringstream lines(r.output);
  for (const auto& c : cases) {
    double ref = 0;
    ASSERT_TRUE(lines >> ref) << c.name << ": " << r.output;
    EXPECT_GT(ref, 0);
    EXPECT_EQ(unet_forward_flops(c.u, c.shape, 3), ref) << c.name;
    EXPECT_EQ(unet_train_step_flops(c.u, c.shape, 3), 3 * ref) << c.name;
  }
}

// fm bench end to end on a tiny network: every measurement asked for is one JSON line with its figures, the training
// FLOPs are the count above, and euler over the weights and noise bench_ref.py wrote ends where PyTorch's euler over
// torchcfm's network does (the same ODE, solved by both sides).
TEST(Bench, CommandMeasuresAndMatchesTheReferenceSolve) {
  FM_SKIP_ON_CUDA("the reference solves on the CPU");
  UNetConfig u;
  u.model_channels = 32;
  u.num_res_blocks = 1;
  u.channel_mult = {1, 2};
  u.attention_resolutions = {4};
  u.num_heads = 1;
  u.num_head_channels = -1;
  TempDir dir("bench_cmd");
  const std::string cfg = write_config(unet_config(u), dir / "tiny.json");
  const std::string common = " --shape 3 8 8 --sample-batch 3 --nll-batch 2 --euler-steps 4 --tol 1e-3";
  std::string ref = test::python() + " " + test::source_dir() + "/scripts/bench_ref.py run --config-json " + cfg +
                    " --what euler --write-weights " + (dir / "w.npz") + " --write-inputs " + (dir / "in.npz") + common;
  auto r = test::run_stdout(ref + " 2>&1");
  if (r.code == 77) GTEST_SKIP() << "torchcfm is not installed in the venv";
  ASSERT_EQ(r.code, 0) << ref << "\n" << r.output;
  auto py = json_lines(r.output);
  ASSERT_EQ(py.size(), 1u) << r.output;

  std::string cmd = test::fm_binary() + " bench --config " + cfg + " --device cpu --what train,euler,dopri5,nll" +
                    " --batch 4 --warmup 1 --steps 2 --peak-tflops 1 --weights " + (dir / "w.npz") + " --inputs " +
                    (dir / "in.npz") + common;
  auto f = test::run_split(cmd, dir.str());
  ASSERT_EQ(f.code, 0) << cmd << "\n" << f.err;
  auto lines = json_lines(f.out);
  ASSERT_EQ(lines.size(), 4u) << f.out;
  const auto& train = lines[0];
  EXPECT_EQ(train["what"], "train");
  EXPECT_EQ(train["batch"], 4);
  EXPECT_GT(train["images_per_s"].get<double>(), 0);
  EXPECT_NEAR(train["images_per_s"].get<double>() * train["ms_per_step"].get<double>() / 1e3, 4.0, 1e-9);
  EXPECT_EQ(train["flops_per_step"].get<double>(), unet_train_step_flops(u, {3, 8, 8}, 4));
  EXPECT_NEAR(train["mfu"].get<double>(), train["tflops_per_s"].get<double>(), 1e-12);  // peak 1 TFLOP/s
  EXPECT_TRUE(std::isfinite(train["loss"].get<double>()));
  EXPECT_EQ(lines[1]["what"], "euler");
  EXPECT_EQ(lines[1]["nfe"], 4);
  EXPECT_NEAR(lines[1]["mean_x"].get<double>(), py[0]["mean_x"].get<double>(), 1e-5);
  EXPECT_EQ(lines[2]["what"], "dopri5");
  EXPECT_GE(lines[2]["nfe"].get<int64_t>(), 6);  // at least one Dormand-Prince step
  EXPECT_EQ(lines[3]["what"], "nll");
  EXPECT_GT(lines[3]["s_per_1000"].get<double>(), 0);
  EXPECT_TRUE(std::isfinite(lines[3]["mean_log_p"].get<double>()));

  auto bad = test::run(test::fm_binary() + " bench --config " + cfg + " --what train,fast --device cpu");
  EXPECT_EQ(bad.code, 2) << bad.output;
  EXPECT_NE(bad.output.find("--what"), std::string::npos) << bad.output;
}

// Without --shape, the bench measures the config's own data: the shapes demo's 16x16 images, the 2-D demo's points.
TEST(Bench, MeasuresTheShapeOfItsConfigsData) {
  FM_SKIP_ON_CUDA("a CPU run of the command");
  TempDir dir("bench_shape");
  const std::string shapes = test::source_dir() + "/configs/shapes_cpu.json";
  auto r = test::run_split(test::fm_binary() + " bench --config " + shapes +
                               " --device cpu --what train --batch 2 --warmup 0 --steps 1",
                           dir.str());
  ASSERT_EQ(r.code, 0) << r.err;
  auto lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), 1u) << r.out;
  const auto cfg = load_config(shapes, {});
  EXPECT_EQ(lines[0]["flops_per_step"].get<double>(), unet_train_step_flops(cfg.model.unet, {3, 16, 16}, 2));

  const std::string toy = test::source_dir() + "/configs/toy2d.json";
  r = test::run_split(test::fm_binary() + " bench --config " + toy +
                          " --device cpu --what train,euler --batch 8 --warmup 0 --steps 1 --sample-batch 4"
                          " --euler-steps 2",
                      dir.str());
  ASSERT_EQ(r.code, 0) << r.err;
  lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), 2u) << r.out;
  EXPECT_TRUE(std::isfinite(lines[0]["loss"].get<double>()));
  EXPECT_FALSE(lines[0].contains("flops_per_step")) << "FLOPs are counted for the U-Net";
  EXPECT_EQ(lines[1]["nfe"], 2);
}

}  // namespace
}  // namespace fm
