#include <fstream>

#include <gtest/gtest.h>

#include "test_util.h"

using fm::test::run;
using fm::test::TempDir;

namespace {
std::string fm_cmd(const std::string& args) { return fm::test::fm_binary() + " " + args; }
int lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

}  // namespace

TEST(Cli, VersionAndHelp) {
  auto v = run(fm_cmd("--version"));
  EXPECT_EQ(v.code, 0);
  EXPECT_NE(v.output.find("LibTorch 2."), std::string::npos) << v.output;
  EXPECT_NE(v.output.find("CUDA available"), std::string::npos);
  auto h = run(fm_cmd("train --help"));
  EXPECT_EQ(h.code, 0);
  EXPECT_NE(h.output.find("--resume"), std::string::npos);
}

TEST(Cli, BadUsageAndBadConfigExitWithTwoAndOneLine) {
  TempDir d;
  std::ofstream(d / "plain") << "a regular file, under which no directory can be created";
  struct Case {
    std::string args, needle;
  } cases[] = {
      {"", "subcommand"},
      {"train", "--config is required"},
      {"train --config " + d / "nope.json", "nope.json: cannot open"},
      {"config --config " + fm::test::source_dir() + "/configs/toy2d.json --set train.lrr=1", "did you mean 'train.lr'"},
      {"train --config " + fm::test::source_dir() + "/configs/toy2d.json --device cuda:7 --out " + d.str(),
       "cuda:7"},
      {"sample --checkpoint " + d / "missing.pt", "missing.pt: no such checkpoint"},
      {"sample --checkpoint x.pt --solver rk45", "rk45"},
      // issue 16: parser messages say what is wrong.
      {"trian --config x.json", "unknown command 'trian' (commands: train, sample, config, eval-nll"},
      {"sample --checkpoint x.pt --n 0", "--n: must be >= 1, got 0"},
      {"sample --checkpoint x.pt --atol 0", "--atol: must be > 0, got 0"},
      {"sample --checkpoint x.pt --seed -1", "--seed: must be an integer >= 0, got '-1'"},
      {"eval-nll --checkpoint x.pt --data toy:moons --batch -3", "--batch: must be >= 1"},
      {"fid-features --weights w.npz --images folder:x --out o.npz --limit -1", "--limit: must be >= 0"},
      {"sample --checkpoint x.pt --resume --overwrite", "--overwrite"},
      // Outputs are checked before any work: here before the weights file (missing too) is read.
      {"fid-features --weights " + d / "no_weights.npz" + " --images folder:" + d.str() + " --out " +
           d / "plain/x.npz",
       "--out " + d / "plain/x.npz" + ": "},
      {"fid-features --weights " + d / "no_weights.npz" + " --images folder:" + d.str() + " --out " + d / "s.npz" +
           " --save-features " + d / "plain/f.npy",
       "--save-features " + d / "plain/f.npy"},
  };
  for (const auto& c : cases) {
    auto r = run(fm_cmd(c.args));
    EXPECT_EQ(r.code, 2) << c.args << "\n" << r.output;
    EXPECT_EQ(lines(r.output), 1) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.needle), std::string::npos) << c.args << "\n" << r.output;
  }
}

TEST(Cli, ConfigPrintsTheResolvedConfig) {
  auto r = run(fm_cmd("config --config " + fm::test::source_dir() + "/configs/toy2d.json --set train.lr=0.25"));
  ASSERT_EQ(r.code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output);
  EXPECT_DOUBLE_EQ(j["train"]["lr"].get<double>(), 0.25);
  EXPECT_EQ(j["data"]["path"], "checkerboard");
  EXPECT_TRUE(j["model"]["unet"].contains("channel_mult"));  // every key, defaults included
}

TEST(Cli, TrainThenSampleWritesNpzAndPng) {
  TempDir d;
  auto r = run(fm_cmd("train --config " + fm::test::source_dir() +
                      "/configs/toy2d.json --set train.steps=20 train.log_every=10 sample.n=100" +
                      fm::test::device_flag() + " --out " +
                      d / "run"));
  ASSERT_EQ(r.code, 0) << r.output;
  auto s = run(fm_cmd("sample --checkpoint " + d / "run/checkpoints/ckpt_000000020.pt" +
                      " --n 300 --batch 128 --solver heun --steps 10" + fm::test::device_flag() + " --out " + d / "s"));
  ASSERT_EQ(s.code, 0) << s.output;
  auto py = run(fm::test::python() + " -c \"import numpy as np; a = np.load('" + d / "s/samples.npz" +
                "')['arr_0']; print(a.dtype, a.shape)\"");
  EXPECT_EQ(py.output, "float32 (300, 2)\n");
  EXPECT_TRUE(std::filesystem::exists(d / "s/samples.png"));
}
