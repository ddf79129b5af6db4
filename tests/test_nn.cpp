// Tests of the ADM U-Net velocity field (src/nn/unet.*).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>

#include <ATen/autocast_mode.h>
#include <sys/wait.h>
#include <unistd.h>

#include "interop/torchcfm_unet.h"
#include "io/npy.h"
#include "kernels/kernels.h"
#include "nn/unet.h"
#include "test_util.h"
#include "util/error.h"

namespace fm {
namespace {

namespace fs = std::filesystem;
using fm::test::opts;

// The U-Net built (on the CPU, so the same seed gives the same weights) and moved to the test device.
std::shared_ptr<VelocityField> unet_on_device(const UNetConfig& cfg, const std::vector<int64_t>& shape) {
  auto net = make_unet_velocity(cfg, shape);
  net->to(fm::test::device());
  return net;
}

UNetConfig tiny_config() {
  UNetConfig c;
  c.model_channels = 32;
  c.num_res_blocks = 1;
  c.channel_mult = {1, 2};
  c.attention_resolutions = {8};
  c.num_heads = 2;
  c.num_head_channels = -1;
  c.dropout = 0.0;
  return c;
}

// Every variant at once: scale-shift, residual up/down, classes, attention at both levels.
UNetConfig full_config() {
  auto c = tiny_config();
  c.attention_resolutions = {16, 8};
  c.use_scale_shift_norm = true;
  c.resblock_updown = true;
  c.num_classes = 10;
  c.num_head_channels = 16;
  return c;
}

// Gives the parameters ADM zero-initialises (and the zero GroupNorm biases) random values, so that every parameter
// influences the output.
void perturb_zeros(torch::nn::Module& m) {
  torch::NoGradGuard g;
  for (auto& p : m.parameters())
    if (p.abs().max().item<float>() == 0.0f) p.normal_(0.0, 0.05);
}

TEST(UNetShape, TinyNetKeepsTheInputShape) {
  torch::manual_seed(0);
  for (int64_t res : {8, 16}) {
    auto net = unet_on_device(tiny_config(), {3, res, res});
    auto x = torch::randn({2, 3, res, res}, opts());
    auto v = (*net)(torch::rand({2}, opts()), x);
    EXPECT_EQ(v.sizes(), x.sizes()) << "resolution " << res;
    EXPECT_EQ(net->num_classes(), 0);
  }
}

TEST(UNetShape, ClassConditionalUsesLabelsAndTheNullLabel) {
  torch::manual_seed(0);
  auto cfg = tiny_config();
  cfg.num_classes = 10;
  auto net = unet_on_device(cfg, {3, 16, 16});
  EXPECT_EQ(net->num_classes(), 10);
  perturb_zeros(*net);
  net->eval();
  auto x = torch::randn({2, 3, 16, 16}, opts()).repeat({2, 1, 1, 1});
  auto t = torch::rand({2}, opts()).repeat({2});
  auto labels = torch::tensor({3, 10, 5, 10}, opts(torch::kLong));
  auto v = (*net)(t, x, labels);
  ASSERT_EQ(v.sizes(), x.sizes());
  // Samples 0 and 2 are the same (t, x) with different classes: the label must matter.
  EXPECT_GT((v[0] - v[2]).abs().max().item<float>(), 1e-4);
  // Undefined labels mean the null label.
  auto v_null = (*net)(t, x, torch::Tensor());
  EXPECT_TRUE(torch::allclose(v_null[1], v[1], 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(v_null[3], v[3], 1e-5, 1e-6));
}

TEST(UNetInit, OutputIsExactlyZero) {
  torch::manual_seed(0);
  for (const auto& cfg : {tiny_config(), full_config()}) {
    auto net = unet_on_device(cfg, {3, 16, 16});
    auto v = (*net)(torch::rand({2}, opts()), torch::randn({2, 3, 16, 16}, opts()),
                    torch::tensor({1, 2}, opts(torch::kLong)));
    EXPECT_EQ(v.abs().max().item<float>(), 0.0f);
  }
}

TEST(UNetGrad, EveryParameterGetsAGradient) {
  torch::manual_seed(0);
  auto cfgs = {tiny_config(), full_config()};
  for (auto cfg : cfgs) {
    cfg.conv_resample = !cfg.resblock_updown;
    cfg.dropout = 0.1;
    auto net = unet_on_device(cfg, {3, 16, 16});
    perturb_zeros(*net);
    auto v = (*net)(torch::rand({2}, opts()), torch::randn({2, 3, 16, 16}, opts()),
                    torch::tensor({1, 7}, opts(torch::kLong)));
    (v - torch::randn_like(v)).pow(2).mean().backward();
    for (const auto& p : net->named_parameters()) {
      ASSERT_TRUE(p.value().grad().defined()) << p.key();
      EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0.0) << p.key();
    }
  }
}

// A 16x16 net with every option on and its zero-initialised layers perturbed (so outputs are not trivially zero),
// in eval mode, with a random batch of two.
struct LayoutCase {
  std::shared_ptr<fm::VelocityField> net;
  torch::Tensor x, t;
};
LayoutCase layout_case() {
  torch::manual_seed(0);
  LayoutCase c{unet_on_device(full_config(), {3, 16, 16}), {}, {}};
  perturb_zeros(*c.net);
  c.net->eval();
  c.x = torch::randn({2, 3, 16, 16}, opts());
  c.t = torch::rand({2}, opts());
  return c;
}

TEST(UNetLayout, ChannelsLastGivesTheSameOutput) {
  auto [net, x, t] = layout_case();
  auto y = torch::tensor({0, 9}, opts(torch::kLong));
  // With gradients on, a CPU network takes the training convolutions (Winograd's, kernels/kernels.h),
  // which round differently; the comparisons below are of the inference path.
  const auto v_train = (*net)(t, x, y).detach();
  torch::NoGradGuard no_grad;
  auto v = (*net)(t, x, y);
  EXPECT_LT(((v_train - v).abs().max() / v.abs().max()).item<float>(), 2e-5);
  auto v_cl = (*net)(t, x.contiguous(torch::MemoryFormat::ChannelsLast), y);
  EXPECT_LT((v - v_cl).abs().max().item<float>(), 1e-5);
  // Each sample is computed on its own: attention must not mix the batch.
  auto v0 = (*net)(t.narrow(0, 0, 1), x.narrow(0, 0, 1), y.narrow(0, 0, 1));
  EXPECT_LT((v0[0] - v[0]).abs().max().item<float>(), 1e-5);
}

// Training in channels-last (fm's layout on CUDA and on CPUs with the fused GroupNorm kernels) gives the gradients
// of NCHW training, for the plain and the scale-shift ResBlocks.
TEST(UNetLayout, ChannelsLastGivesTheSameGradients) {
  for (auto cfg : {tiny_config(), full_config()}) {
    torch::manual_seed(0);
    auto net = unet_on_device(cfg, {3, 16, 16});
    perturb_zeros(*net);
    auto x = torch::randn({3, 3, 16, 16}, opts());
    auto t = torch::rand({3}, opts());
    auto y = torch::tensor({1, 4, 10}, opts(torch::kLong));
    auto target = torch::randn({3, 3, 16, 16}, opts());
    auto grads = [&] {
      net->zero_grad();
      (*net)(t, x, y).sub(target).pow(2).mean().backward();
      std::vector<torch::Tensor> g;
      for (auto& p : net->parameters()) g.push_back(p.grad().clone().contiguous());
      return g;
    };
    const auto nchw = grads();
    kernels::weights_to_channels_last(*net);
    const auto nhwc = grads();
    const auto names = net->named_parameters().keys();
    for (size_t i = 0; i < nchw.size(); ++i) {
      const double scale = nchw[i].abs().max().item<double>();
      EXPECT_LE((nchw[i] - nhwc[i]).abs().max().item<double>(), 1e-4 * scale + 1e-7) << names[i];
    }
  }
}

// The CPU layout rule of nn/memory_format.h: channels-last wherever the fused kernels run, training or not, at any
// thread count; toys and CUDA sampling never.
TEST(UNetLayout, CpuChannelsLastRule) {
  if (!kernels::fused_cpu_group_norm_available()) GTEST_SKIP() << "no AVX2 + FMA: the CPU stays NCHW";
  const torch::Device cpu(torch::kCPU);
  const int threads = torch::get_num_threads();
  torch::set_num_threads(1);
  EXPECT_TRUE(kernels::prefers_channels_last(cpu, {3, 32, 32}, /*training=*/true));
  EXPECT_FALSE(kernels::prefers_channels_last(cpu, {2}, /*training=*/true));
  torch::set_num_threads(3);
  EXPECT_TRUE(kernels::prefers_channels_last(cpu, {3, 32, 32}, /*training=*/true));
  EXPECT_TRUE(kernels::prefers_channels_last(cpu, {3, 32, 32}, /*training=*/false));
  torch::set_num_threads(threads);
  EXPECT_FALSE(kernels::prefers_channels_last(torch::Device(torch::kCUDA), {3, 32, 32}, /*training=*/false));
  EXPECT_TRUE(kernels::prefers_channels_last(torch::Device(torch::kCUDA), {3, 32, 32}, /*training=*/true));
}

TEST(UNetLayout, RunsUnderBf16Autocast) {
  auto [net, x, t] = layout_case();
  auto y = torch::tensor({4, 10}, opts(torch::kLong));
  auto ref = (*net)(t, x, y);
  const auto dev = fm::test::device().type();
  at::autocast::set_autocast_enabled(dev, true);
  at::autocast::set_autocast_dtype(dev, at::kBFloat16);
  torch::Tensor v;
  try {
    v = (*net)(t, x, y).to(torch::kFloat32);
  } catch (...) {
    at::autocast::set_autocast_enabled(dev, false);
    throw;
  }
  at::autocast::set_autocast_enabled(dev, false);
  at::autocast::clear_cache();
  ASSERT_TRUE(torch::isfinite(v).all().item<bool>());
  // bf16 keeps about 3 significant digits; the network is a few dozen layers deep.
  EXPECT_LT((v - ref).norm().item<float>(), 0.05 * ref.norm().item<float>());
}

TEST(UNetParams, TorchcfmCifar10Count) {
  UNetConfig c;  // torchcfm examples/images/cifar10/train_cifar10.py
  c.model_channels = 128;
  c.num_res_blocks = 2;
  c.channel_mult = {1, 2, 2, 2};
  c.attention_resolutions = {16};
  c.num_heads = 4;
  c.num_head_channels = 64;
  c.dropout = 0.1;
  EXPECT_EQ(parameter_count(*make_unet_velocity(c, {3, 32, 32})), 35746307);
}

TEST(UNetParams, FlowMatchingCifar10Count) {
  UNetConfig c;  // facebookresearch/flow_matching examples/image/models/model_configs.py, "cifar10"
  c.model_channels = 128;
  c.num_res_blocks = 4;
  c.channel_mult = {2, 2, 2};
  c.attention_resolutions = {16};
  c.num_heads = 1;
  c.num_head_channels = -1;
  c.dropout = 0.3;
  c.use_scale_shift_norm = true;
  c.conv_resample = false;
  EXPECT_EQ(parameter_count(*make_unet_velocity(c, {3, 32, 32})), 55676419);
}

TEST(UNetConfigErrors, ShapesThatDoNotFitAreInputErrors) {
  auto expect_error = [](UNetConfig c, std::vector<int64_t> shape, const std::string& key) {
    try {
      make_unet_velocity(c, shape);
      ADD_FAILURE() << "no error for " << key;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  };
  auto c = tiny_config();
  c.model_channels = 48;
  expect_error(c, {3, 16, 16}, "model.unet.channel_mult");
  expect_error(tiny_config(), {3, 15, 16}, "model.unet.channel_mult");
  c = tiny_config();
  c.attention_resolutions = {4};
  expect_error(c, {3, 16, 16}, "model.unet.attention_resolutions");
  c = tiny_config();
  c.num_heads = 3;
  expect_error(c, {3, 16, 16}, "model.unet.num_heads");
  c.num_head_channels = 24;
  expect_error(c, {3, 16, 16}, "model.unet.num_head_channels");
  expect_error(tiny_config(), {16, 16}, "model.type");
}

// Loads a state_dict written by tests/ref/unet_torchcfm.py under torchcfm's names, through fm's own mapping of the
// two layouts (which must account for every tensor both ways).
void load_params(torch::nn::Module& m, const std::string& path) { load_torchcfm_state(m, read_npz(path), path); }

// A fresh temporary directory for the files the reference script writes, removed with them at the end.
// (std::filesystem::remove_all is avoided: the libtorch wheel exports its own std::filesystem symbols and its
// remove_all crashes when it binds to them.)
struct RefDir {
  fs::path path;
  std::vector<std::string> files;
  RefDir() {
    std::string tmpl = (fs::temp_directory_path() / "fm_unet_ref_XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed for " + tmpl);
    path = tmpl;
  }
  ~RefDir() {
    for (const auto& f : files) std::remove((path / f).c_str());
    ::rmdir(path.c_str());
  }
};

TEST(UNetReference, MatchesTorchcfm) {
  FM_SKIP_ON_CUDA("compares with torchcfm run on the CPU; CudaParity.UNetForwardFp32 compares CUDA with the CPU");
  RefDir dir;
  for (const char* name : {"plain", "film", "updown"})
    for (const char* kind : {"_params.npz", "_io.npz"}) dir.files.push_back(std::string(name) + kind);
  std::string cmd =
      std::string(FM_PYTHON_EXE) + " " + FM_SOURCE_DIR + "/tests/ref/unet_torchcfm.py " + dir.path.string();
  int rc = std::system(cmd.c_str());
  if (WIFEXITED(rc) && WEXITSTATUS(rc) == 77) GTEST_SKIP() << "torchcfm is not installed in the venv";
  ASSERT_EQ(rc, 0) << cmd;

  struct Case {
    std::string name;
    UNetConfig cfg;
    std::vector<int64_t> shape;
  };
  std::vector<Case> cases;
  {
    auto c = tiny_config();  // conv resampling, 16 channels per head, dropout off in eval
    c.num_heads = 4;
    c.num_head_channels = 16;
    c.dropout = 0.1;
    cases.push_back({"plain", c, {3, 16, 16}});
  }
  {
    auto c = tiny_config();
    c.num_res_blocks = 2;
    c.attention_resolutions = {16, 8};
    c.conv_resample = false;
    c.num_classes = 5;
    c.use_scale_shift_norm = true;
    cases.push_back({"film", c, {3, 16, 16}});
  }
  {
    auto c = tiny_config();
    c.channel_mult = {1, 1, 2};
    c.attention_resolutions = {2};
    c.num_heads = 1;
    c.num_head_channels = 32;
    c.resblock_updown = true;
    cases.push_back({"updown", c, {2, 16, 8}});
  }
  for (const auto& k : cases) {
    SCOPED_TRACE(k.name);
    auto net = make_unet_velocity(k.cfg, k.shape);
    load_params(*net, (dir.path / (k.name + "_params.npz")).string());
    net->eval();
    auto io = read_npz((dir.path / (k.name + "_io.npz")).string());
    auto y = io.count("y") ? io.at("y") : torch::Tensor();
    torch::NoGradGuard g;
    auto v = (*net)(io.at("t"), io.at("x"), y);
    const auto& ref = io.at("out");
    ASSERT_EQ(v.sizes(), ref.sizes());
    EXPECT_GT(ref.abs().max().item<float>(), 0.1f);  // a real signal, not the zero-init output
    EXPECT_LT((v - ref).abs().max().item<float>(), 1e-4);
  }
}

}  // namespace
}  // namespace fm
