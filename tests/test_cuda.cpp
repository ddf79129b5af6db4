// CPU/CUDA parity: the same code on both devices, each result on the GPU against the CPU's. Every random input is
// drawn on the CPU and copied, so the two runs see identical numbers; where a run draws on the device (training), the
// comparison is statistical. fp32 comparisons turn TF32 off (it keeps 10 mantissa bits, about 1e-3 relative, which
// would hide real errors). Without a GPU every test here skips, saying so.
#include <cmath>
#include <fstream>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint.h"
#include "config/config.h"
#include "fid/fid_stats.h"
#include "fid/inception.h"
#include "fid/precision_recall.h"
#include "io/npy.h"
#include "likelihood/likelihood.h"
#include "nn/unet.h"
#include "path/prob_path.h"
#include "sample/generate.h"
#include "sample/graphed_velocity.h"
#include "sample/reflow_run.h"
#include "solver/ode.h"
#include "test_util.h"
#include "train/meanflow_objective.h"
#include "train/trainer.h"

namespace fm {
namespace {

using fm::test::TempDir;

// A suite started with FM_TEST_DEVICE=cuda on a machine without a GPU must fail, not skip its way to green.
TEST(TestDevice, RequestedDeviceIsAvailable) {
  if (!fm::test::on_cuda()) GTEST_SKIP() << "FM_TEST_DEVICE is " << fm::test::device_spec();
  ASSERT_TRUE(torch::cuda::is_available()) << "FM_TEST_DEVICE=" << fm::test::device_spec() << " but CUDA is not available";
  EXPECT_LT(fm::test::device().index(), static_cast<int64_t>(torch::cuda::device_count()));
}

// The GPU for the parity tests: the test device when it is a GPU, else cuda:0.
torch::Device gpu() { return fm::test::on_cuda() ? fm::test::device() : torch::Device(torch::kCUDA, 0); }

class CudaParity : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: the CPU/CUDA parity tests need a GPU";
    auto& ctx = at::globalContext();
    saved_cublas_tf32_ = ctx.allowTF32CuBLAS();
    saved_cudnn_tf32_ = ctx.allowTF32CuDNN();
    ctx.setAllowTF32CuBLAS(false);
    ctx.setAllowTF32CuDNN(false);
  }
  // fm::train turns TF32 on for its run; the next test starts from the state before this one.
  void TearDown() override {
    if (!torch::cuda::is_available()) return;
    auto& ctx = at::globalContext();
    ctx.setAllowTF32CuBLAS(saved_cublas_tf32_);
    ctx.setAllowTF32CuDNN(saved_cudnn_tf32_);
  }

 private:
  bool saved_cublas_tf32_ = false, saved_cudnn_tf32_ = false;
};

// Largest difference relative to the largest reference value.
double max_rel(const torch::Tensor& a, const torch::Tensor& ref) {
  auto r = ref.detach().to(torch::kCPU, torch::kFloat64);
  return ((a.detach().to(torch::kCPU, torch::kFloat64) - r).abs().max() / r.abs().max()).item<double>();
}

// A 16x16 class-conditional U-Net with attention at both levels, scale-shift norm and residual resampling, its
// zero-initialised layers given random values so that every layer shapes the output.
UNetConfig parity_unet() {
  UNetConfig c;
  c.model_channels = 32;
  c.num_res_blocks = 1;
  c.channel_mult = {1, 2};
  c.attention_resolutions = {16, 8};
  c.num_heads = 2;
  c.num_head_channels = -1;
  c.dropout = 0.0;
  c.use_scale_shift_norm = true;
  c.resblock_updown = true;
  c.num_classes = 4;
  return c;
}
std::shared_ptr<VelocityField> unet_on(const torch::Device& device) {
  torch::manual_seed(0);  // the same weights on both devices
  auto net = make_unet_velocity(parity_unet(), {3, 16, 16});
  {
    torch::NoGradGuard g;
    for (auto& p : net->parameters())
      if (p.abs().max().item<float>() == 0.0f) p.normal_(0.0, 0.05);
  }
  net->to(device);
  net->eval();
  return net;
}

struct Inputs {
  torch::Tensor t, x, y;
};
Inputs inputs(int64_t n, uint64_t seed) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(seed);
  return {torch::rand({n}, g), torch::randn({n, 3, 16, 16}, g), torch::randint(0, 5, {n}, g)};
}

TEST_F(CudaParity, UNetForwardFp32) {
  auto [t, x, y] = inputs(4, 1);
  auto cpu = unet_on(torch::kCPU), cuda = unet_on(gpu());
  torch::NoGradGuard g;
  auto ref = (*cpu)(t, x, y);
  auto v = (*cuda)(t.to(gpu()), x.to(gpu()), y.to(gpu()));
  ASSERT_TRUE(v.is_cuda());
  // fp32 with another summation order (cuDNN, cuBLAS): a few ulps per layer, a few dozen layers.
  EXPECT_LT(max_rel(v, ref), 1e-4);
  // Channels-last, as training on CUDA runs it.
  auto v_cl = (*cuda)(t.to(gpu()), x.to(gpu()).contiguous(at::MemoryFormat::ChannelsLast), y.to(gpu()));
  EXPECT_LT(max_rel(v_cl, ref), 1e-4);
}

TEST_F(CudaParity, UNetForwardBf16Autocast) {
  auto [t, x, y] = inputs(4, 2);
  auto cpu = unet_on(torch::kCPU), cuda = unet_on(gpu());
  torch::NoGradGuard g;
  auto ref = (*cpu)(t, x, y);
  torch::Tensor v;
  at::autocast::set_autocast_enabled(at::kCUDA, true);
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  try {
    v = (*cuda)(t.to(gpu()), x.to(gpu()), y.to(gpu()));
  } catch (...) {
    at::autocast::set_autocast_enabled(at::kCUDA, false);
    throw;
  }
  at::autocast::set_autocast_enabled(at::kCUDA, false);
  at::autocast::clear_cache();
  EXPECT_EQ(v.scalar_type(), torch::kBFloat16) << "autocast did not run the last convolution in bf16";
  ASSERT_TRUE(torch::isfinite(v).all().item<bool>());
  // bf16 keeps 8 mantissa bits (relative rounding 2^-9, about 2e-3 per operation); over a few dozen layers the
  // errors add up to a few per cent of the output's norm, the bound the CPU autocast test uses too.
  auto vf = v.to(torch::kCPU, torch::kFloat32);
  double rel = ((vf - ref).norm() / ref.norm()).item<double>();
  EXPECT_LT(rel, 0.05);
  EXPECT_GT(rel, 1e-5) << "bf16 agreed with fp32 to fp32 precision: autocast cannot have been on";
}

TEST_F(CudaParity, TrainingStepGradients) {
  // One flow matching step as the trainer takes it (OT path, MSE to the conditional velocity), in fp32.
  // Named copies rather than a structured binding: C++17 lambdas cannot capture those (clang refuses).
  const Inputs in = inputs(4, 3);
  const torch::Tensor &t = in.t, &x1 = in.x, &y = in.y;
  auto x0 = torch::randn_like(x1);
  auto path = make_path(PathConfig{});
  auto grads = [&](const torch::Device& d) {
    auto net = unet_on(d);
    net->train();
    auto ps = path->sample(x0.to(d), x1.to(d), t.to(d));
    auto loss = torch::mse_loss((*net)(t.to(d), ps.x_t, y.to(d)), ps.u_t);
    loss.backward();
    std::vector<std::pair<std::string, torch::Tensor>> g;
    for (auto& p : net->named_parameters()) g.emplace_back(p.key(), p.value().grad().to(torch::kCPU));
    return std::make_pair(loss.item<double>(), g);
  };
  auto [loss_cpu, g_cpu] = grads(torch::kCPU);
  auto [loss_gpu, g_gpu] = grads(gpu());
  EXPECT_NEAR(loss_gpu, loss_cpu, 1e-5 * loss_cpu);
  ASSERT_EQ(g_cpu.size(), g_gpu.size());
  for (size_t i = 0; i < g_cpu.size(); ++i) {
    ASSERT_TRUE(g_gpu[i].second.defined()) << g_gpu[i].first;
    // Relative to the tensor's norm: single entries of a gradient can be near zero.
    double rel = ((g_gpu[i].second - g_cpu[i].second).norm() / g_cpu[i].second.norm().clamp_min(1e-12)).item<double>();
    EXPECT_LT(rel, 1e-3) << g_cpu[i].first;
  }
}

TEST_F(CudaParity, ShortTrainingRunLossCurve) {
  // The trainer draws noise, times and batches on its device, and CUDA's generator is not the CPU's: the two runs
  // see different random numbers, so their curves agree only statistically. Each point is the mean loss over 25 steps
  // of the shapes demo's recipe (batch 32 of 16x16 images); the run on CUDA also takes the bf16 autocast,
  // channels-last and TF32 paths. Measured on the CPU with seeds 0 and 1: 0.936 0.503 0.409 0.370 and
  // 0.921 0.499 0.405 0.363, within 2% of each other; 10% leaves room for bf16.
  TempDir d;
  auto curve = [&](const std::string& device, const std::string& run) {
    auto cfg = load_config(fm::test::source_dir() + "/configs/shapes_cpu.json",
                           {"device=" + device, "data.path=2048", "train.steps=100", "train.warmup_steps=10",
                            "train.log_every=25", "train.ckpt_every=1000", "train.sample_every=0", "sample.steps=2"});
    fm::train(cfg, {d / run, ""});
    std::ifstream m(d / run + "/metrics.jsonl");
    std::vector<double> loss;
    for (std::string line; std::getline(m, line);) loss.push_back(nlohmann::json::parse(line)["loss"].get<double>());
    return loss;
  };
  auto cpu = curve("cpu", "cpu_run"), cuda = curve(gpu().str(), "gpu_run");
  ASSERT_EQ(cpu.size(), 4u);
  ASSERT_EQ(cuda.size(), 4u);
  for (size_t i = 0; i < cpu.size(); ++i)
    EXPECT_NEAR(cuda[i], cpu[i], 0.1 * cpu[i]) << "point " << i << " (25 steps each)";
  EXPECT_LT(cuda.back(), 0.6 * cuda.front()) << "the CUDA run did not learn";
}

TEST_F(CudaParity, GraphedTrainingStepMatchesEager) {
  // train.cuda_graph replays one captured step: the same kernels on the same data, with the default CUDA generator
  // registered, so every replay must draw what the eager step draws at that point of the stream (Philox offsets
  // advance alike) and read the lr of its own step. Per-step losses of the two runs (fp32, one per metrics line,
  // warm-up, capture and replays alike) and the final EMA sample grid therefore agree to rounding; stale noise, a
  // baked-in learning rate or a missed update would show at once.
  TempDir d;
  auto losses = [&](bool graph, const std::string& run) {
    auto cfg = load_config(fm::test::source_dir() + "/configs/shapes_cpu.json",
                           {"device=" + gpu().str(), "data.path=512", "train.steps=12", "train.warmup_steps=6",
                            "train.log_every=1", "train.ckpt_every=1000", "train.sample_every=0", "sample.steps=2",
                            "train.bf16=false", std::string("train.cuda_graph=") + (graph ? "true" : "false")});
    fm::train(cfg, {d / run, ""});
    std::ifstream m(d / run + "/metrics.jsonl");
    std::vector<double> loss;
    for (std::string line; std::getline(m, line);) loss.push_back(nlohmann::json::parse(line)["loss"].get<double>());
    return loss;
  };
  auto eager = losses(false, "eager"), graphed = losses(true, "graphed");
  ASSERT_EQ(eager.size(), 12u);
  ASSERT_EQ(graphed.size(), 12u);
  for (size_t i = 0; i < eager.size(); ++i) EXPECT_NEAR(graphed[i], eager[i], 1e-4 * eager[i]) << "step " << i + 1;
}

TEST_F(CudaParity, SamplingFromTheSameNoise) {
  auto [t, x0, y] = inputs(4, 4);
  auto cpu = unet_on(torch::kCPU), cuda = unet_on(gpu());
  SolveSettings heun{Solver::heun, 8};
  auto a = generate(*cpu, x0, y, heun), b = generate(*cuda, x0.to(gpu()), y.to(gpu()), heun);
  ASSERT_TRUE(b.x.is_cuda());
  EXPECT_LT(max_rel(b.x, a.x), 1e-4);
  EXPECT_EQ(b.nfe, a.nfe);
  // With guidance, which stacks the classes and the null label into one batch.
  a = generate(*cpu, x0, y, heun, 1.5), b = generate(*cuda, x0.to(gpu()), y.to(gpu()), heun, 1.5);
  EXPECT_LT(max_rel(b.x, a.x), 1e-4);
  // dopri5: the step size controller sees the same errors up to rounding, so it takes the same steps. (Two samples
  // and tolerance 1e-4 keep the CPU's half short.)
  SolveSettings dopri{Solver::dopri5, 0, 1e-4, 1e-4};
  auto x2 = x0.narrow(0, 0, 2), y2 = y.narrow(0, 0, 2);
  a = generate(*cpu, x2, y2, dopri), b = generate(*cuda, x2.to(gpu()), y2.to(gpu()), dopri);
  EXPECT_LT(max_rel(b.x, a.x), 1e-4);
  EXPECT_NEAR(static_cast<double>(b.nfe), static_cast<double>(a.nfe), 6.0) << "at most one step apart";
}

TEST_F(CudaParity, SdeSamplingAndTheGuidanceIntervalFromTheSameNoise) {
  // euler_maruyama with every step's noise drawn on the CPU and copied: the drift (velocity plus w times the score from
  // the path's conversion) and the noise-free last step run the same arithmetic on both devices. Guidance on an
  // interval switches between the guided and the plain conditional velocity at the same times on both.
  auto [t, x0, y] = inputs(4, 6);
  auto cpu = unet_on(torch::kCPU), cuda = unet_on(gpu());
  SolveSettings sde{Solver::euler_maruyama, 6};
  sde.path = make_path(PathConfig{});
  std::vector<torch::Tensor> noise;
  auto g = at::make_generator<at::CPUGeneratorImpl>(9);
  for (int k = 0; k < 6; ++k) noise.push_back(torch::randn(x0.sizes(), g));
  auto on = [&](const torch::Device& d) { return [&, d](int64_t k) { return noise.at(k).to(d); }; };
  auto a = generate(*cpu, x0, y, sde, {}, nullptr, on(torch::kCPU));
  auto b = generate(*cuda, x0.to(gpu()), y.to(gpu()), sde, {}, nullptr, on(gpu()));
  ASSERT_TRUE(b.x.is_cuda());
  EXPECT_LT(max_rel(b.x, a.x), 1e-4);
  EXPECT_EQ(b.nfe, 6);
  EXPECT_EQ(a.nfe, 6);
  SolveSettings heun{Solver::heun, 8};
  const Guidance interval(1.5, 0.3, 0.7);
  a = generate(*cpu, x0, y, heun, interval), b = generate(*cuda, x0.to(gpu()), y.to(gpu()), heun, interval);
  EXPECT_LT(max_rel(b.x, a.x), 1e-4);
  auto everywhere = generate(*cpu, x0, y, heun, 1.5);
  EXPECT_GT(max_rel(everywhere.x, a.x), 1e-3) << "the interval must change the samples";
}

TEST_F(CudaParity, GraphedSamplingMatchesEager) {
  // sample.cuda_graph replays the network captured after two eager evaluations: the same kernels on the same inputs,
  // so each solver's samples and NFE agree with the eager solve to rounding. A replay that read a stale time or state,
  // or handed out the static output that the next replay overwrites (rk4 and dopri5 keep several evaluations), would
  // be off at once.
  auto [t, x0, y] = inputs(4, 4);
  auto cuda = unet_on(gpu());
  const auto xg = x0.to(gpu()), yg = y.to(gpu());
  for (Solver solver : {Solver::euler, Solver::rk4, Solver::dopri5}) {
    SolveSettings eager{solver, 6, 1e-4, 1e-4}, graphed = eager;
    graphed.cuda_graph = true;
    auto a = generate(*cuda, xg, yg, eager), b = generate(*cuda, xg, yg, graphed);
    EXPECT_FALSE(a.graphed);
    EXPECT_TRUE(b.graphed) << solver;
    EXPECT_LT(max_rel(b.x, a.x), 1e-4) << solver;
    EXPECT_EQ(b.nfe, a.nfe) << solver;
  }
  // With guidance, which stacks the classes and the null label into one batch inside the graph.
  SolveSettings heun{Solver::heun, 4}, graphed_heun = heun;
  graphed_heun.cuda_graph = true;
  auto a = generate(*cuda, xg, yg, heun, 1.5), b = generate(*cuda, xg, yg, graphed_heun, 1.5);
  EXPECT_TRUE(b.graphed);
  EXPECT_LT(max_rel(b.x, a.x), 1e-4);
}

TEST_F(CudaParity, ReflowPairsAndThePairsCouplingOnTheGpu) {
  // fm reflow draws each pair's noise on the CPU (per item) for either device, so the x0 are the same bytes and the x1
  // agree to rounding; the SDE noise of each step is drawn the same way. Then a short run of the pairs coupling on the
  // GPU (U-shaped times, pseudo-Huber, initialised from the flow that made the pairs) learns without a non-finite step.
  TempDir d;
  Config c;
  c.device = "cpu";
  c.model.mlp.hidden = 16;
  c.model.mlp.depth = 2;
  c.train.steps = 5;
  c.train.batch_size = 32;
  c.train.tensorboard = false;
  c.sample.n = 50;
  c.sample.steps = 2;
  const auto base = fm::train(c, {d / "base", ""}).checkpoint;
  ReflowOptions o;
  o.checkpoint = base;
  o.n = 40;
  o.batch = 16;
  o.seed = 3;
  o.solve.solver = Solver::euler_maruyama;
  o.solve.steps = 4;
  o.out_dir = d / "cpu";
  o.device = "cpu";
  run_reflow(o);
  o.out_dir = d / "gpu";
  o.device = gpu().str();
  run_reflow(o);
  auto a = read_npz(d / "cpu/pairs.npz"), b = read_npz(d / "gpu/pairs.npz");
  EXPECT_TRUE(torch::equal(a.at("x0"), b.at("x0")));
  EXPECT_LT(max_rel(b.at("x1"), a.at("x1")), 1e-4);
  c.device = gpu().str();
  c.data.format = DataFormat::pairs;
  c.data.path = d / "gpu";
  c.path.coupling = Coupling::pairs;
  c.time.sampler = TimeSampler::u_shaped;
  c.loss.type = LossType::pseudo_huber;
  c.train.init_from = base;
  c.train.steps = 20;
  c.train.log_every = 1;
  fm::train(c, {d / "rectified", ""});
  std::ifstream m(d / "rectified/metrics.jsonl");
  int lines = 0;
  for (std::string line; std::getline(m, line); ++lines)
    EXPECT_TRUE(std::isfinite(nlohmann::json::parse(line)["loss"].get<double>())) << line;
  EXPECT_EQ(lines, 20);
}

TEST_F(CudaParity, BitsPerDimOfTheSameImages) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(5);
  auto levels = torch::randint(0, 256, {2, 3, 16, 16}, g, torch::TensorOptions().dtype(torch::kUInt8));
  auto y = dequantize(levels, torch::rand({2, 3, 16, 16}, g, torch::TensorOptions().dtype(torch::kFloat64)))
               .to(torch::kFloat32);
  auto probe = make_probe(Probe::rademacher, {2, 3, 16, 16}, g);
  auto bpd = [&](const torch::Device& d) {
    auto net = unet_on(d);
    auto labels = torch::full({2}, 4, torch::TensorOptions().dtype(torch::kLong).device(d));  // the null label
    for (auto& p : net->parameters()) p.requires_grad_(false);
    VelocityFn v = [&](const torch::Tensor& t, const torch::Tensor& x) { return (*net)(t, x, labels); };
    LikelihoodOptions o;
    o.atol = o.rtol = 1e-4;  // the CPU's half stays short; both devices take the same steps whatever the tolerance
    auto r = log_likelihood(v, y.to(d), o, probe.to(d));
    return std::make_pair(bits_per_dim(r.log_p, 3 * 16 * 16).to(torch::kCPU), r.nfe);
  };
  auto [cpu, nfe_cpu] = bpd(torch::kCPU);
  auto [cuda, nfe_cuda] = bpd(gpu());
  // Rounding differences only (the same steps on both devices); log p is a sum over 768 dimensions.
  EXPECT_LT((cuda - cpu).abs().max().item<double>(), 1e-3) << "cpu " << cpu << " cuda " << cuda;
  EXPECT_NEAR(static_cast<double>(nfe_cuda), static_cast<double>(nfe_cpu), 6.0);
}

TEST_F(CudaParity, FidInceptionFeatures) {
  // Random weights (as tests/test_fid.cpp), through the file loader so both networks are exactly the same.
  TempDir dir;
  {
    torch::manual_seed(0);
    FidInception net;
    std::vector<std::pair<std::string, torch::Tensor>> arrays;
    for (auto& p : net->named_parameters()) arrays.emplace_back(p.key(), p.value().detach());
    for (auto& b : net->named_buffers())
      if (b.key().find("num_batches_tracked") == std::string::npos) arrays.emplace_back(b.key(), b.value());
    write_npz(dir / "w.npz", arrays);
  }
  auto g = at::make_generator<at::CPUGeneratorImpl>(6);
  auto images = torch::randint(0, 256, {3, 3, 32, 32}, g, torch::TensorOptions().dtype(torch::kUInt8));
  FeatureOptions opt;
  opt.batch = 2;
  opt.progress = false;
  opt.keep_features = true;
  auto features = [&](const torch::Device& d) {
    auto net = load_fid_inception(dir / "w.npz", d);
    torch::NoGradGuard ng;
    return compute_fid_features(net, images.to(d), opt).features;
  };
  auto cpu = features(torch::kCPU), cuda = features(gpu());
  ASSERT_EQ(cuda.sizes(), cpu.sizes());
  EXPECT_GT(cpu.std().item<double>(), 1e-3) << "the random network is degenerate";
  for (int64_t i = 0; i < cpu.size(0); ++i) EXPECT_LT(max_rel(cuda[i], cpu[i]), 1e-4) << "image " << i;
}

// fid/pil_resize.h's clean resize (float64 products on the GPU too) and precision and recall give the CPU's figures.
TEST_F(CudaParity, FidCleanResizeAndPrecisionRecall) {
  auto g = torch::make_generator<at::CPUGeneratorImpl>(12);
  auto images = torch::randint(0, 256, {4, 3, 32, 32}, g, torch::TensorOptions().dtype(torch::kUInt8));
  auto cpu = fid_input(images, FidResize::clean, torch::kCPU);
  auto cuda = fid_input(images, FidResize::clean, gpu()).cpu();
  EXPECT_LE((cpu - cuda).abs().max().item<double>(), 1e-6) << "the float32 rounding of the same float64 sums";
  auto real = torch::randn({300, 64}, g, torch::TensorOptions().dtype(torch::kFloat64));
  auto fake = torch::randn({200, 64}, g, torch::TensorOptions().dtype(torch::kFloat64)) * 1.1 + 0.2;
  auto on_cpu = precision_recall(real, fake, 3, 50);
  auto on_cuda = precision_recall(real.to(gpu()), fake.to(gpu()), 3, 50);
  EXPECT_EQ(on_cpu.precision, on_cuda.precision);
  EXPECT_EQ(on_cpu.recall, on_cuda.recall);
}

TEST_F(CudaParity, VersionNamesEachGpu) {
  auto r = fm::test::run(fm::test::fm_binary() + " --version");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("CUDA available: yes"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("cuda:0 "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("compute capability "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" GiB"), std::string::npos) << r.output;
}

// Rank 0 alone writes a job's checkpoint, on its own device; rank r resumes on cuda:r. The stream rank 0 drew on
// its device is the one every rank continues (the ranks draw the same training stream), so another device index
// must get it, not rank 0's never-used copy of that device's generator.
TEST_F(CudaParity, AResumeOnAnotherDeviceContinuesTheSavedStream) {
  if (torch::cuda::device_count() < 2) GTEST_SKIP() << "needs two GPUs";
  const torch::Device writer(torch::kCUDA, 0), reader(torch::kCUDA, 1);
  TempDir d;
  Config cfg;
  cfg.model.mlp.hidden = 8;
  cfg.model.mlp.depth = 1;
  auto model = make_velocity_field(cfg.model, {2}), ema = make_velocity_field(cfg.model, {2});
  torch::manual_seed(5);
  torch::randn({100}, torch::TensorOptions().device(writer));  // rank 0's stream moves on; cuda:1's does not
  save_checkpoint(d / "c.pt", {&cfg, 1, {2}, {"toy:checkerboard", 0, 0}, model.get(), ema.get(), nullptr, nullptr,
                               {}, writer});
  const auto next = torch::randn({8}, torch::TensorOptions().device(writer)).cpu();
  torch::manual_seed(5);
  CheckpointReader(d / "c.pt", torch::kCPU).restore_rng(reader);
  EXPECT_TRUE(torch::equal(torch::randn({8}, torch::TensorOptions().device(reader)).cpu(), next));
}

// The post-hoc EMA profiles update inside the captured step from a step count kept on the device: a graphed run's
// snapshots must hold what an eager run's hold (a decay baked in at capture would leave the later ones far off).
TEST_F(CudaParity, GraphedTrainingKeepsThePostHocEmaProfiles) {
  TempDir d;
  auto snapshot = [&](bool graph, const std::string& run) {
    auto cfg = load_config(fm::test::source_dir() + "/configs/shapes_cpu.json",
                           {"device=" + gpu().str(), "data.path=512", "train.steps=12", "train.warmup_steps=6",
                            "train.log_every=12", "train.ckpt_every=1000", "train.sample_every=0", "sample.steps=2",
                            "train.bf16=false", "train.ema_snapshot_every=12",
                            std::string("train.cuda_graph=") + (graph ? "true" : "false")});
    fm::train(cfg, {d / run, ""});
    CheckpointReader ck(d / run + "/checkpoints/ckpt_000000012.pt", torch::kCPU);
    torch::serialize::InputArchive ar;
    load_sealed_archive(d / run + "/phema/phema_000000012.pt", torch::kCPU, ar);
    std::vector<torch::Tensor> profiles;
    for (int k = 0; k < 2; ++k) {
      auto m = make_velocity_field(ck.config().model, ck.config().path, ck.sample_shape());
      torch::serialize::InputArchive sub;
      EXPECT_TRUE(ar.try_read("profile_" + std::to_string(k), sub));
      m->load(sub);
      for (const auto& p : m->parameters()) profiles.push_back(p.detach().flatten());
    }
    return torch::cat(profiles);
  };
  const auto eager = snapshot(false, "eager"), graphed = snapshot(true, "graphed");
  EXPECT_LT(max_rel(graphed, eager), 1e-3);
}

// A capture that fails (here a host read inside the network, which a capture refuses) is ended and the solve goes
// on eagerly to the eager result, instead of leaving the stream in capture mode.
TEST_F(CudaParity, AFailedCaptureFallsBackToEagerSampling) {
  int calls = 0;
  GraphedVelocity v(
      [&](const torch::Tensor&, const torch::Tensor& x) {
        ++calls;
        (void)x.abs().max().item<float>();
        return -x;
      },
      /*enabled=*/true, gpu());
  auto x0 = torch::randn({4, 3}, torch::TensorOptions().device(gpu()));
  auto r = solve_ode([&](double t, const torch::Tensor& x) { return v(t, x); }, x0, uniform_grid(0.0, 1.0, 6),
                     Solver::euler);
  EXPECT_FALSE(v.graphed());
  EXPECT_EQ(calls, 7) << "2 warm-up, the failed capture, then 4 eager evaluations";
  EXPECT_TRUE(torch::allclose(r.x.cpu(), (x0 * std::pow(1.0 - 1.0 / 6, 6)).cpu(), 1e-5, 1e-6));
  torch::cuda::synchronize();  // the device is usable after the failure
}

// MeanFlow's training step and sampler: the Jacobian-vector product of the target through the U-Net (forward-mode AD
// on cuDNN's and cuBLAS's kernels), the weighted loss's gradients, and one- and two-step samples, from the same
// inputs on both devices, in fp32.
TEST_F(CudaParity, MeanFlowTargetGradientsAndFewStepSamples) {
  auto cfg_unet = parity_unet();
  cfg_unet.second_time = true;
  auto net_on = [&](const torch::Device& d) {
    torch::manual_seed(0);
    auto net = make_unet_velocity(cfg_unet, {3, 16, 16});
    torch::NoGradGuard g;
    for (auto& p : net->parameters())
      if (p.abs().max().item<float>() == 0.0f) p.normal_(0.0, 0.05);
    net->to(d);
    return net;
  };
  const Inputs in = inputs(4, 5);
  const torch::Tensor &t = in.t, &x = in.x, &y = in.y;
  const torch::Tensor r = (t + 0.5 * (1 - t) * torch::rand({4}, at::make_generator<at::CPUGeneratorImpl>(6)));
  const torch::Tensor v = torch::randn_like(x);
  Config c;
  c.model.type = ModelType::unet;
  c.model.unet = cfg_unet;
  c.objective.type = ObjectiveType::meanflow;
  auto path = make_path(c.path);
  MeanFlowObjective obj(c, *path, conditioning_of(c.model));
  auto run = [&](const torch::Device& d) {
    auto net = net_on(d);
    net->train();
    PredictMean mean = [&](const torch::Tensor& tt, const torch::Tensor& rr, const torch::Tensor& xx,
                           const torch::Tensor& ll) { return net->forward_mean(tt, rr, xx, ll); };
    auto p = obj.predict_and_target(mean, x.to(d), t.to(d), r.to(d), v.to(d), y.to(d));
    auto err = (p.u - p.target).pow(2).flatten(1).sum(1);
    adaptive_weighted_mean(err, 0.75, 1e-3).backward();
    std::vector<torch::Tensor> g;
    for (auto& q : net->parameters()) g.push_back(q.grad().to(torch::kCPU));
    net->eval();
    SolveSettings s{Solver::meanflow, 2};
    auto x2 = generate(*net, x.to(d), y.to(d), s);
    return std::make_tuple(p.target.to(torch::kCPU), g, x2.x.to(torch::kCPU), x2.nfe);
  };
  auto [target_cpu, g_cpu, x_cpu, nfe_cpu] = run(torch::kCPU);
  auto [target_gpu, g_gpu, x_gpu, nfe_gpu] = run(gpu());
  EXPECT_LT(max_rel(target_gpu, target_cpu), 1e-4);
  ASSERT_EQ(g_cpu.size(), g_gpu.size());
  for (size_t i = 0; i < g_cpu.size(); ++i)
    EXPECT_LT(((g_gpu[i] - g_cpu[i]).norm() / g_cpu[i].norm().clamp_min(1e-12)).item<double>(), 1e-3) << i;
  EXPECT_LT(max_rel(x_gpu, x_cpu), 1e-4);
  EXPECT_EQ(nfe_gpu, 2);
  EXPECT_EQ(nfe_cpu, 2);
}

}  // namespace
}  // namespace fm
