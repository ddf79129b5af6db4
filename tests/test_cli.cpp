#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "test_util.h"

using fm::test::run;
using fm::test::TempDir;

namespace {
using fm::test::fm_cmd;
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
      {"config --config " + fm::test::source_dir() + "/configs/toy2d.json --device gpu", "device: must be auto, cpu"},
      {"config --config " + fm::test::source_dir() + "/configs/toy2d.json --set device=gpu",
       "device: must be auto, cpu"},
      {"sample --checkpoint x.pt --solver eulr", "did you mean \"euler\""},
      {"bench --config " + fm::test::source_dir() + "/configs/toy2d.json --what trian", "did you mean \"train\""},
      // Parser messages say what is wrong.
      {"trian --config x.json", "unknown command 'trian' (commands: train, sample, config, eval-nll"},
      {"sample --checkpoint x.pt --num-samples 0", "--num-samples: must be >= 1, got 0"},
      {"sample --checkpoint x.pt --atol 0", "--atol: must be > 0, got 0"},
      {"sample --checkpoint x.pt --seed -1", "--seed: must be an integer >= 0, got '-1'"},
      {"eval-nll --checkpoint x.pt --data toy:moons --batch -3", "--batch: must be >= 1"},
      {"fid-features --weights w.npz --images folder:x --out o.npz --limit -1", "--limit: must be >= 0"},
      {"sample --checkpoint x.pt --resume --overwrite", "--overwrite"},
      // Outputs that cannot be written, and a config that is a directory, are bad input too.
      {"train --config " + fm::test::source_dir() + "/configs/toy2d.json --out " + d / "plain",
       "--out " + d / "plain" + ": exists and is not a directory"},
      {"sample --checkpoint " + d / "plain" + " --out /proc/fm_cannot_be_here",
       "--out /proc/fm_cannot_be_here: cannot create"},
      {"config --config " + d.str(), d.str() + ": is a directory, not a config file"},
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
  // A mistyped checkpoint leaves nothing behind: not even the default --out of sample or reflow.
  for (const std::string cmd : {"sample", "reflow --num-pairs 4 --out pairs"}) {
    TempDir cwd;
    auto r = run("cd " + cwd.str() + " && " + fm_cmd(cmd + " --checkpoint typo.pt"));
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_NE(r.output.find("typo.pt: no such checkpoint file"), std::string::npos) << r.output;
    EXPECT_TRUE(std::filesystem::is_empty(cwd.str())) << cmd;
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
                      " --num-samples 300 --batch 128 --solver heun --steps 10" + fm::test::device_flag() + " --out " + d / "s"));
  ASSERT_EQ(s.code, 0) << s.output;
  auto py = run(fm::test::python() + " -c \"import numpy as np; a = np.load('" + d / "s/samples.npz" +
                "')['arr_0']; print(a.dtype, a.shape)\"");
  EXPECT_EQ(py.output, "float32 (300, 2)\n");
  EXPECT_TRUE(std::filesystem::exists(d / "s/samples.png"));
}

// `torchrun --no-python ... fm SUB OPTIONS` hands fm's options to torchrun's argparse first, which takes any
// argument that abbreviates one of its own options (`--n` of `--nnodes`) or refuses it as ambiguous. Every option of
// every subcommand, as fm's own --help lists them, goes through torchrun's real parser and must reach fm unchanged.
TEST(Cli, EveryOptionReachesFmThroughTorchrunsParser) {
  TempDir d;
  // Option names: the first column of the option lines ("  -n,--num-samples INT ...") of a --help text.
  auto option_names = [](const std::string& help) {
    std::vector<std::string> names;
    std::istringstream in(help);
    bool in_options = false;
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("Options:", 0) == 0) in_options = true;
      if (line.rfind("Subcommands:", 0) == 0 || line.rfind("Positionals:", 0) == 0) in_options = false;
      if (!in_options || line.rfind("  -", 0) != 0) continue;
      std::istringstream first(line.substr(2, line.find(' ', 2) - 2));
      for (std::string name; std::getline(first, name, ',');) names.push_back(name);
    }
    return names;
  };
  auto top = run(fm_cmd("--help"));
  ASSERT_EQ(top.code, 0);
  std::vector<std::string> subs;
  {
    std::istringstream in(top.output.substr(top.output.find("Subcommands:")));
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line) && line.rfind("  ", 0) == 0 && line.size() > 2 && line[2] != ' ')
      subs.push_back(line.substr(2, line.find(' ', 2) - 2));
  }
  EXPECT_GE(subs.size(), 8u) << top.output;
  nlohmann::json cases = nlohmann::json::array();
  auto add = [&](std::vector<std::string> prefix, const std::string& opt) {
    auto with_value = prefix;
    with_value.push_back(opt);
    with_value.push_back("1");
    cases.push_back(with_value);
    if (opt.rfind("--", 0) == 0) {
      prefix.push_back(opt + "=1");
      cases.push_back(prefix);
    }
  };
  for (const auto& opt : option_names(top.output)) add({}, opt);
  size_t options = 0;
  for (const auto& sub : subs) {
    auto h = run(fm_cmd(sub + " --help"));
    ASSERT_EQ(h.code, 0) << sub;
    auto names = option_names(h.output);
    EXPECT_GE(names.size(), 3u) << sub << " lists -h, --help and its own options\n" << h.output;
    for (const auto& opt : names) add({sub}, opt);
    options += names.size();
  }
  EXPECT_GE(options, 60u);
  std::ofstream(d / "in.json") << cases.dump();
  auto r = run(fm::test::python() + " " + fm::test::ref_script("torchrun_args.py") + " " + d / "in.json" + " " +
               d / "out.json");
  ASSERT_EQ(r.code, 0) << r.output;
  std::ifstream f(d / "out.json");
  auto results = nlohmann::json::parse(f);
  ASSERT_EQ(results.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_FALSE(results[i].contains("error")) << cases[i].dump() << ": " << results[i].dump();
    EXPECT_EQ(results[i].value("script", ""), "fm") << cases[i].dump();
    EXPECT_EQ(results[i].value("args", nlohmann::json()), cases[i]) << "torchrun changed fm's arguments";
  }
}
