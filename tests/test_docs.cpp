// The documentation's code runs as written: the Python of docs/commands.md that loads an `fm export` into torchcfm's
// UNetModelWrapper, run verbatim on a model exported here, gives the velocities fm computes.
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "checkpoint/network.h"
#include "io/npy.h"
#include "test_util.h"
#include "train/trainer.h"

namespace fm {
namespace {

using test::TempDir;

// The first ```python block after `heading` in a Markdown file.
std::string python_block_after(const std::string& markdown_path, const std::string& heading) {
  std::ifstream f(markdown_path);
  std::stringstream all;
  all << f.rdbuf();
  const std::string text = all.str();
  const size_t at = text.find(heading);
  if (at == std::string::npos) return "";
  const size_t begin = text.find("```python\n", at);
  if (begin == std::string::npos) return "";
  const size_t body = begin + std::string("```python\n").size();
  return text.substr(body, text.find("```", body) - body);
}

TEST(Docs, ExportSnippetLoadsTheModelIntoTorchcfm) {
  FM_SKIP_ON_CUDA("a CPU comparison with the Python reference");
  TempDir d;
  Config c;
  c.device = "cpu";
  c.data.format = DataFormat::shapes;
  c.data.path = "16";
  c.data.resolution = 8;
  c.model.type = ModelType::unet;
  c.model.unet = test::tiny_unet();
  c.model.unet.attention_resolutions = {8};
  c.train.steps = 20;  // enough for the zero-initialised output layers to move
  c.train.batch_size = 4;
  c.train.log_every = c.train.ckpt_every = 20;
  c.sample.n = 2;
  c.sample.steps = 1;
  const auto ckpt = train(c, {d / "run", ""}).checkpoint;
  // The raw weights under the snippet's file name: after 20 steps the EMA's would still be near the zero output.
  auto r = test::run(
      test::fm_cmd("export --weights raw --checkpoint " + ckpt + " --out " + d / "cifar10_ema.safetensors"));
  ASSERT_EQ(r.code, 0) << r.output;

  // fm's own velocities at a few points, for the snippet's network to reproduce.
  CheckpointReader ck(ckpt, torch::kCPU);
  auto net = load_network(ck, Weights::raw, torch::kCPU);
  torch::manual_seed(3);
  auto x = torch::randn({3, 3, 8, 8}), t = torch::rand({3});
  torch::Tensor v;
  {
    torch::NoGradGuard ng;
    net->eval();
    v = (*net)(t, x).contiguous();
  }
  ASSERT_GT(v.abs().max().item<double>(), 1e-3) << "a network this close to zero would compare trivially";
  write_npz(d / "points.npz", {{"x", x}, {"t", t}, {"v", v}});

  const std::string snippet = python_block_after(test::source_dir() + "/docs/commands.md", "## fm export and fm import");
  ASSERT_NE(snippet.find("UNetModelWrapper"), std::string::npos) << "the snippet is not in docs/commands.md";
  std::ofstream(d / "snippet.py") << snippet << R"(
import numpy as np, torch
p = np.load("points.npz")
with torch.no_grad():
    v = net.eval()(torch.from_numpy(p["t"]), torch.from_numpy(p["x"])).numpy()
print("max_abs_diff", float(np.abs(v - p["v"]).max()))
)";
  r = test::run("cd " + d.str() + " && " + test::python() + " snippet.py");
  if (r.output.find("No module named 'torchcfm'") != std::string::npos) GTEST_SKIP() << "torchcfm is not installed";
  ASSERT_EQ(r.code, 0) << snippet << "\n" << r.output;
  const auto at = r.output.find("max_abs_diff ");
  ASSERT_NE(at, std::string::npos) << r.output;
  EXPECT_LT(std::stod(r.output.substr(at + 13)), 1e-5 * std::max(1.0, v.abs().max().item<double>())) << r.output;
}

}  // namespace
}  // namespace fm
