// fm's training steps against PyTorch running the same recipe step for step (tests/ref/train_equivalence.py):
// torchcfm's U-Net from fm's initial weights (under the names fm export writes), torchcfm's flow matcher for the
// path, torch.optim.AdamW, clip_grad_norm_, the warmup and cosine decay as a LambdaLR and torchcfm's EMA, fed the
// batches, noise, times and labels fm drew. fm streams its draws and its weights after every step to the Python
// process, which trains alongside, compares and writes the differences back.
//
// On the CPU fm trains in float64 and float32, on CUDA in float32 (TF32 convolutions and matmuls, as fm train sets
// them and PyTorch is told to) and under bf16 autocast. Tolerances, at every one of the 20 steps:
//   - float64: loss, gradient norm, every weight and every EMA weight within 1e-10 of PyTorch's (relative for loss
//     and norm). Both compute the same float64 arithmetic in other orders: rounding of ~1e-16 per operation, grown
//     by the network's depth and by Adam, which divides by the root of tiny second moments.
//   - float32 and bf16: the exact trajectory is PyTorch's float64 run on the same draws, and fm must stay about as
//     close to it as PyTorch in the same precision does. The loss's and gradient norm's distances from it are at
//     most 8 times the largest distance PyTorch's own run has over the 20 steps: fm's CPU convolutions are Winograd
//     F(4x4, 3x3), whose transforms lose about three bits to a direct convolution (Lavin and Gray 2016; Barabasz et
//     al. 2020), and its attention is SDPA rather than torchcfm's einsum and softmax. The weights' and EMA's L2
//     distances are at most 3 times PyTorch's at the same step, plus 16 float32 rounding units of their norm: they
//     integrate those gradients through Adam, whose sign-like steps on gradients near zero dominate the difference
//     for both, so the larger gradient error shows less in them.
#include <signal.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "config/config.h"
#include "data/batch_sampler.h"
#include "interop/state_dict.h"
#include "interop/torchcfm_unet.h"
#include "io/npy.h"
#include "train/lr_schedule.h"
#include "train/train_step.h"
#include "util/device.h"
#include "test_util.h"

namespace fm {
namespace {

constexpr int64_t kSteps = 20;
constexpr double kFloat32Unit = 5.96e-8;  // 2^-24

// The recipe: the shapes demo's kind of U-Net with an attention level and scale-shift norm, class-conditional with
// label dropout, the paper's OT path with sigma_min, logit-normal times, AdamW with weight decay, warmup then cosine
// decay, gradient clipping that engages and an EMA short enough to move in 20 steps. Dropout is off: its masks are
// the one draw fm does not hand out.
Config recipe() {
  nlohmann::json j = {
      {"seed", 3},
      {"data", {{"format", "shapes"}, {"path", "64"}, {"resolution", 8}, {"hflip", true}}},
      {"model",
       {{"type", "unet"},
        {"unet",
         {{"model_channels", 32}, {"num_res_blocks", 1}, {"channel_mult", {1, 2}}, {"attention_resolutions", {4}},
          {"num_heads", 2}, {"num_head_channels", -1}, {"dropout", 0.0}, {"use_scale_shift_norm", true},
          {"num_classes", 3}, {"class_dropout", 0.3}}}}},
      {"path", {{"type", "cond_ot"}, {"sigma_min", 1e-4}}},
      {"time", {{"sampler", "logit_normal"}, {"loc", 0.0}, {"scale", 1.0}}},
      {"train",
       {{"steps", kSteps}, {"batch_size", 4}, {"lr", 2e-3}, {"betas", {0.9, 0.99}}, {"eps", 1e-8},
        {"weight_decay", 0.05}, {"warmup_steps", 5}, {"decay", "cosine"}, {"final_lr_scale", 0.1},
        {"grad_clip", 1.0}, {"ema_decay", 0.8}}}};
  return config_from_json(j, "equivalence recipe");
}

// Module construction in another default dtype, for the float64 run.
struct DefaultDtype {
  caffe2::TypeMeta saved = torch::get_default_dtype();
  explicit DefaultDtype(torch::Dtype d) { torch::set_default_dtype(caffe2::scalarTypeToTypeMeta(d)); }
  ~DefaultDtype() { torch::set_default_dtype(saved); }
};

// Writes tensors to the reference's stdin as float64 (int64 for labels), in the order the script reads them.
struct Pipe {
  FILE* f;
  explicit Pipe(const std::string& cmd) : f(::popen(cmd.c_str(), "w")) {}
  bool send(const torch::Tensor& v) {
    auto c = v.detach().to(torch::kCPU, v.is_floating_point() ? torch::kFloat64 : torch::kInt64).contiguous();
    const auto n = static_cast<size_t>(c.numel());
    return std::fwrite(c.data_ptr(), c.element_size(), n, f) == n;
  }
  int close() { return f ? ::pclose(std::exchange(f, nullptr)) : -1; }
  ~Pipe() { close(); }
};

torch::Tensor flat(const torch::nn::Module& unet) {
  std::vector<torch::Tensor> parts;
  for (const auto& [name, v] : to_torchcfm_state(unet, /*null_label=*/true)) parts.push_back(v.reshape(-1));
  return torch::cat(parts);
}

struct FmRun {
  std::string draws;      // the name the reference writes its results under
  std::string precision;  // float64, float32 or bf16
  std::vector<double> loss, grad_norm, lr;
  int64_t dropped_labels = 0, kept_labels = 0, clipped_steps = 0;
};

// Trains the recipe for kSteps steps from `init` in `precision`, sending each step's draws and the weights and EMA
// after it down `pipe`.
void train_fm(FmRun& run, const std::map<std::string, torch::Tensor>& init, Pipe& pipe) {
  Config cfg = recipe();
  cfg.train.bf16 = run.precision == "bf16";
  const auto device = test::device();
  configure_backend(device);
  torch::manual_seed(cfg.seed);
  Dataset data = load_dataset(cfg.data, device);
  BatchSampler sampler(data, cfg.data.hflip);
  const bool f64 = run.precision == "float64";
  DefaultDtype dtype(f64 ? torch::kFloat64 : torch::kFloat32);
  TrainingSetup setup(cfg, data.sample_shape(), device);
  load_torchcfm_state(*setup.model, init, "init.npz");
  setup.ema.reset();
  std::map<std::string, torch::Tensor> draws;
  setup.objective->record_draws([&](const std::string& name, const torch::Tensor& v) { draws[name] = v; });
  TrainStep step(setup);
  for (int64_t s = 0; s < kSteps; ++s) {
    Batch batch = sampler.next(cfg.train.batch_size);
    if (f64) batch.x = batch.x.to(torch::kFloat64);
    const double lr = lr_at(cfg.train, s);
    auto r = step(batch, s, lr);
    run.loss.push_back(r.loss.item<double>());
    run.grad_norm.push_back(r.grad_norm.item<double>());
    run.lr.push_back(lr);
    run.clipped_steps += run.grad_norm.back() > cfg.train.grad_clip;
    const auto dropped = draws.at("labels").eq(cfg.model.unet.num_classes).sum().item<int64_t>();
    run.dropped_labels += dropped;
    run.kept_labels += cfg.train.batch_size - dropped;
    for (const char* k : {"x0", "x1", "t", "labels"}) ASSERT_TRUE(pipe.send(draws.at(k))) << "the reference stopped";
    ASSERT_TRUE(pipe.send(flat(*setup.model)) && pipe.send(flat(*setup.ema_model))) << "the reference stopped";
  }
  std::fflush(pipe.f);
}

// The per-step differences, for the log: against PyTorch in float64, or fm's and PyTorch's distances from the exact
// (float64) trajectory.
void print_table(const FmRun& run, const std::map<std::string, torch::Tensor>& ref) {
  auto at = [&](const std::string& key, int64_t s) { return ref.at(key)[s].item<double>(); };
  const std::string& p = run.precision;
  if (p == "float64")
    std::printf("fm float64 against PyTorch float64\nstep  |loss diff|  |grad norm diff|  max|weight diff|  max|EMA diff|\n");
  else
    std::printf("distance from PyTorch's float64 run, fm %s | PyTorch %s\n"
                "step  |loss diff|            |grad norm diff|       weights L2             EMA L2\n",
                p.c_str(), p.c_str());
  for (int64_t s = 0; s < kSteps; ++s) {
    const double dl = std::abs(run.loss[s] - at("loss_float64", s)), dg = std::abs(run.grad_norm[s] - at("grad_norm_float64", s));
    if (p == "float64") {
      std::printf("%4lld  %.2e     %.2e          %.2e          %.2e\n", static_cast<long long>(s), dl, dg,
                  at("weights_maxdiff_float64", s), at("ema_maxdiff_float64", s));
      continue;
    }
    std::printf("%4lld  %.2e | %.2e    %.2e | %.2e    %.2e | %.2e    %.2e | %.2e\n", static_cast<long long>(s), dl,
                std::abs(at("loss_" + p, s) - at("loss_float64", s)), dg,
                std::abs(at("grad_norm_" + p, s) - at("grad_norm_float64", s)), at("weights_l2_fm_float64", s),
                at("weights_l2_" + p + "_float64", s), at("ema_l2_fm_float64", s), at("ema_l2_" + p + "_float64", s));
  }
}

TEST(TrainEquivalence, MatchesPyTorchStepForStep) {
  test::TempDir dir("equivalence");
  const Config cfg = recipe();
  const std::vector<int64_t> shape = {3, 8, 8};
  std::vector<FmRun> runs;
  if (test::on_cuda())
    runs = {{"f32", "float32"}, {"bf16", "bf16"}};
  else
    runs = {{"f64", "float64"}, {"f32", "float32"}};

  // The initial weights: fm's initialisation, every parameter then moved (the zero-initialised output layers
  // included) so that all of them get a gradient from the first step. The null label's row stays zero: it is a
  // padding index, never trained, in fm and (told so by the recipe) in PyTorch.
  std::map<std::string, torch::Tensor> init;
  nlohmann::json names = nlohmann::json::array();
  {
    torch::manual_seed(11);
    auto net = make_velocity_field(cfg.model, cfg.path, shape);
    torch::NoGradGuard g;
    for (auto& p : net->named_parameters()) {
      auto moved = p.value() + 0.05 * torch::randn_like(p.value());
      if (p.key() == "label_emb.weight") moved[cfg.model.unet.num_classes].zero_();  // the null label: zero, fixed
      p.value().copy_(moved);
    }
    std::vector<std::pair<std::string, torch::Tensor>> state = to_torchcfm_state(*net, /*null_label=*/true);
    for (const auto& [name, v] : state) {
      init[name] = v.clone();
      names.push_back(name);
    }
    write_npz(dir / "init.npz", state);
  }
  nlohmann::json recipe_json = {
      {"unet", torchcfm_wrapper_kwargs(cfg.model.unet, shape)},
      {"names", names},
      {"null_label", cfg.model.unet.num_classes},
      {"device", test::device().str()},
      {"batch", cfg.train.batch_size},
      {"shape", shape},
      {"steps", kSteps},
      {"sigma_min", cfg.path.sigma_min},
      {"lr", cfg.train.lr},
      {"betas", cfg.train.betas},
      {"eps", cfg.train.eps},
      {"weight_decay", cfg.train.weight_decay},
      {"warmup_steps", cfg.train.warmup_steps},
      {"final_lr_scale", cfg.train.final_lr_scale},
      {"grad_clip", cfg.train.grad_clip},
      {"ema_decay", cfg.train.ema_decay},
      {"runs", nlohmann::json::array()}};
  for (const auto& r : runs) recipe_json["runs"].push_back({{"draws", r.draws}, {"precision", r.precision}});
  std::ofstream(dir / "recipe.json") << recipe_json.dump(1);

  ::signal(SIGPIPE, SIG_IGN);  // a reference that stops early makes the writes fail, not the test process
  {
    Pipe pipe(test::python() + " " + FM_SOURCE_DIR + "/tests/ref/train_equivalence.py " + dir.str());
    ASSERT_NE(pipe.f, nullptr);
    for (auto& r : runs) {
      train_fm(r, init, pipe);
      if (HasFatalFailure()) break;
    }
    const int rc = pipe.close();
    if (WIFEXITED(rc) && WEXITSTATUS(rc) == 77) GTEST_SKIP() << "torchcfm is not installed in the venv";
    ASSERT_EQ(rc, 0) << "tests/ref/train_equivalence.py failed";
  }
  if (HasFatalFailure()) return;

  for (const auto& run : runs) {
    SCOPED_TRACE(run.precision);
    auto ref = read_npz(dir / ("ref_" + run.draws + ".npz"));
    auto at = [&](const std::string& key, int64_t s) { return ref.at(key)[s].item<double>(); };
    // The recipe exercises what it claims to: clipping, and label dropout that keeps some labels.
    EXPECT_GT(run.clipped_steps, 0);
    EXPECT_GT(run.dropped_labels, 0);
    EXPECT_GT(run.kept_labels, run.dropped_labels);
    const std::string p = run.precision;
    print_table(run, ref);
    // The largest distance of PyTorch's run in precision p from its float64 run over all steps.
    auto worst_torch = [&](const std::string& key) {
      return (ref.at(key + "_" + p) - ref.at(key + "_float64")).abs().max().item<double>();
    };
    for (int64_t s = 0; s < kSteps; ++s) {
      SCOPED_TRACE("step " + std::to_string(s));
      EXPECT_NEAR(run.lr[s], at("lr", s), 1e-15);
      if (p == "float64") {
        const double loss = at("loss_float64", s), gn = at("grad_norm_float64", s);
        EXPECT_NEAR(run.loss[s], loss, 1e-10 * std::max(1.0, loss));
        EXPECT_NEAR(run.grad_norm[s], gn, 1e-10 * std::max(1.0, gn));
        EXPECT_LE(at("weights_maxdiff_float64", s), 1e-10);
        EXPECT_LE(at("ema_maxdiff_float64", s), 1e-10);
        continue;
      }
      // fm's and PyTorch's distances from the float64 trajectory on the same draws.
      EXPECT_LE(std::abs(run.loss[s] - at("loss_float64", s)), 8 * worst_torch("loss"));
      EXPECT_LE(std::abs(run.grad_norm[s] - at("grad_norm_float64", s)), 8 * worst_torch("grad_norm"));
      for (const std::string w : {"weights", "ema"})
        EXPECT_LE(at(w + "_l2_fm_float64", s),
                  3 * at(w + "_l2_" + p + "_float64", s) + 16 * kFloat32Unit * at(w + "_norm", s))
            << w;
    }
  }
}

}  // namespace
}  // namespace fm
