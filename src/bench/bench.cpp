#include "bench/bench.h"

#include <algorithm>
#include <chrono>

#if __has_include(<c10/cuda/CUDACachingAllocator.h>)
#include <c10/cuda/CUDACachingAllocator.h>
#define FM_BENCH_CUDA_HEADERS 1
#endif

#include "bench/flops.h"
#include "data/batch_sampler.h"
#include "data/dataset.h"
#include "interop/torchcfm_unet.h"
#include "io/npy.h"
#include "likelihood/likelihood.h"
#include "kernels/kernels.h"
#include "nn/velocity_field.h"
#include "path/prob_path.h"
#include "sample/generate.h"
#include "train/adamw.h"
#include "train/ema.h"
#include "train/grad_clip.h"
#include "train/nonfinite_guard.h"
#include "train/train_step.h"
#include "train/train_step_graph.h"
#include "util/device.h"
#include "util/error.h"

namespace fm {

namespace {

using Clock = std::chrono::steady_clock;

void synchronize(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

void reset_peak_memory(const torch::Device& device) {
#ifdef FM_BENCH_CUDA_HEADERS
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#endif
  (void)device;
}

double seconds(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::vector<int64_t> batched(int64_t n, const std::vector<int64_t>& shape) {
  std::vector<int64_t> s = {n};
  s.insert(s.end(), shape.begin(), shape.end());
  return s;
}

nlohmann::json common(BenchWhat what, const torch::Device& device) {
  return {{"impl", "fm"},
          {"what", name_of(what)},
          {"device", device.str()},
          {"threads", at::get_num_threads()},
          {"kernel_threads", kernels::kernel_threads()}};
}

// Training data of the config's kind: uniform uint8 images of `shape` held on the device (with labels for a
// class-conditional model), Gaussian pairs for path.coupling = pairs, or the config's 2-D toy distribution.
Dataset synthetic_data(const Config& cfg, const std::vector<int64_t>& shape, int64_t bsz, const torch::Device& device) {
  const bool pairs = cfg.path.coupling == Coupling::pairs;
  if (shape.size() == 1 && !pairs) return load_dataset(cfg.data, device);
  Dataset data;
  data.name = "synthetic";
  data.device = device;
  const auto items = batched(std::max<int64_t>(1024, 4 * bsz), shape);
  if (pairs) {
    data.pair_x0 = torch::randn(items, torch::TensorOptions().device(device));
    data.pair_x1 = torch::randn(items, torch::TensorOptions().device(device));
  } else {
    data.images = torch::randint(0, 256, items, torch::TensorOptions().dtype(torch::kUInt8).device(device));
  }
  const int64_t classes = conditioning_of(cfg.model).num_classes;
  if (classes > 0) {
    data.num_classes = classes;
    data.labels = torch::randint(0, classes, {data.size()},
                                 torch::TensorOptions().dtype(torch::kLong).device(device));
  }
  return data;
}

nlohmann::json bench_train(const Config& cfg, const BenchOptions& o, const std::vector<int64_t>& shape,
                           const torch::Device& device, bool profile) {
  const int64_t bsz = o.batch > 0 ? o.batch : cfg.train.batch_size;
  torch::manual_seed(o.seed);
  Dataset data = synthetic_data(cfg, shape, bsz, device);

  // The step fm train takes (train/train_step.h), in one process.
  TrainingSetup setup(cfg, shape, device);
  auto& model = setup.model;
  BatchSampler sampler(data, cfg.data.hflip && !data.is_toy());
  TrainStep eager(setup);
  GraphedTrainStep step(eager, device, cfg.train.cuda_graph);
  model->train();

  StepResult r;
  int64_t taken = 0;
  for (int64_t i = 0; i < o.warmup; ++i) r = step(sampler.next(bsz), taken++, cfg.train.lr);
  synchronize(device);
  reset_peak_memory(device);
  auto t0 = Clock::now();
  for (int64_t i = 0; i < o.steps; ++i) r = step(sampler.next(bsz), taken++, cfg.train.lr);
  const double loss = r.loss.item<double>();  // waits for the device
  const double dt = seconds(t0) / static_cast<double>(o.steps);

  auto j = common(BenchWhat::train, device);
  if (step.graphed()) j["impl"] = "fm_cuda_graph";
  j["batch"] = bsz;
  j["steps"] = o.steps;
  j["bf16"] = setup.autocast;
  j["cuda_graph"] = step.graphed();
  j["ms_per_step"] = 1e3 * dt;
  j["images_per_s"] = static_cast<double>(bsz) / dt;
  j["peak_mem_mib"] = peak_memory_mib(device);
  j["loss"] = loss;
  j["parameters"] = parameter_count(*model);
  if (cfg.model.type == ModelType::unet) {
    const auto& mf = cfg.objective.meanflow;
    const int guidance_forwards = mf.omega == 1.0 && mf.kappa == 0.0 ? 0 : (mf.kappa == 0.0 ? 1 : 2);
    const double flops = cfg.objective.type == ObjectiveType::meanflow
                             ? unet_meanflow_train_step_flops(cfg.model.unet, shape, bsz, guidance_forwards)
                             : unet_train_step_flops(cfg.model.unet, shape, bsz);
    j["flops_per_step"] = flops;
    j["tflops_per_s"] = flops / dt / 1e12;
    if (o.peak_tflops > 0) j["mfu"] = flops / dt / (o.peak_tflops * 1e12);
  }
  if (profile) {
    // The parts of the step outside the network, each timed alone over as many repetitions as the step was: drawing
    // the batch, the objective with the network replaced by a free function of x_t (noise, times, path, target and
    // loss, forward only), the gradient norm and guard, fused AdamW and the EMA (the gradients of the last step are
    // still there). What is left of the step is the network's forward and backward.
    auto time_ms = [&](const std::function<void()>& fn) {
      fn();
      synchronize(device);
      auto t = Clock::now();
      for (int64_t i = 0; i < o.steps; ++i) fn();
      synchronize(device);
      return 1e3 * seconds(t) / static_cast<double>(o.steps);
    };
    auto batch = sampler.next(bsz);
    auto no_skip = torch::zeros({}, torch::TensorOptions().device(device));
    torch::Tensor gn;
    const double data_ms = time_ms([&] { sampler.next(bsz); });
    const double objective_ms = time_ms([&] {
      torch::NoGradGuard ng;
      setup.objective->loss_from(
          batch, {[](const auto&, const auto& x, const auto&) { return x * 0.5; },
                  [](const auto&, const auto&, const auto& x, const auto&) { return x * 0.5; }});
    });
    const double norm_ms = time_ms([&] {
      gn = clip_grad_norm(setup.params, cfg.train.grad_clip);
      setup.guard.check(r.loss, gn);
    });
    const double adamw_ms = time_ms([&] { setup.optimizer.step(cfg.train.lr, no_skip); });
    const double ema_ms = time_ms([&] { setup.ema.update(no_skip); });
    const double outside = data_ms + objective_ms + norm_ms + adamw_ms + ema_ms;
    j["what"] = "profile";
    j["profile_ms"] = {{"data", data_ms},
                       {"noise_times_path_loss", objective_ms},
                       {"grad_norm_and_guard", norm_ms},
                       {"fused_adamw", adamw_ms},
                       {"ema", ema_ms},
                       {"outside_network", outside},
                       {"network_forward_backward", 1e3 * dt - outside}};
  }
  return j;
}

// The network with the weights of `o.weights` (a torchcfm state_dict), in eval mode: the model both sides sample.
std::shared_ptr<VelocityField> bench_model(const Config& cfg, const BenchOptions& o, const std::vector<int64_t>& shape,
                                           const torch::Device& device) {
  auto model = make_velocity_field(cfg.model, cfg.path, shape);
  if (!o.weights.empty()) load_torchcfm_state(*model, read_npz(o.weights), o.weights);
  model->to(device);
  if (kernels::prefers_channels_last(device, shape, /*training=*/false)) kernels::weights_to_channels_last(*model);
  model->eval();
  // Frozen, as in fm sample and eval-nll: the likelihood's input gradients then take the inference convolutions
  // (kernels/kernels.h), not the training ones.
  for (auto& p : model->parameters()) p.requires_grad_(false);
  return model;
}

// The inputs both sides integrate: x0 (sampling noise), x1 (images to evaluate) and the Hutchinson probe, read from
// --inputs when scripts/bench_ref.py wrote them, else drawn here.
struct Inputs {
  torch::Tensor x0, x1, probe;
};

Inputs bench_inputs(const BenchOptions& o, const std::vector<int64_t>& shape, const std::string& file,
                    const torch::Device& device) {
  Inputs in;
  if (!file.empty()) {
    auto m = read_npz(file, {"x0", "x1", "probe"});
    in.x0 = m.at("x0"), in.x1 = m.at("x1"), in.probe = m.at("probe");
  } else {
    torch::manual_seed(o.seed + 1);
    in.x0 = torch::randn(batched(o.sample_batch, shape));
    in.x1 = torch::rand(batched(o.nll_batch, shape)) * 2 - 1;
    in.probe = torch::randint(0, 2, in.x1.sizes()).to(torch::kFloat32) * 2 - 1;
  }
  in.x0 = in.x0.to(device, torch::kFloat32), in.x1 = in.x1.to(device, torch::kFloat32);
  in.probe = in.probe.to(device, torch::kFloat32);
  return in;
}

}  // namespace

std::vector<nlohmann::json> run_bench(const Config& cfg, const BenchOptions& o,
                                      const std::function<void(const nlohmann::json&)>& on_result,
                                      const std::string& inputs_file) {
  const auto device = resolve_device(cfg.device);
  configure_backend(device);
  const auto shape = o.shape.empty() ? sample_shape_of(cfg.data) : o.shape;
  if (shape.size() != 3 && shape.size() != 1) throw InputError("--shape: expected C H W");
  std::vector<nlohmann::json> out;
  auto emit = [&](nlohmann::json j) {
    if (on_result) on_result(j);
    out.push_back(std::move(j));
  };
  std::shared_ptr<VelocityField> model;
  Inputs in;
  bool warm = false;
  for (const auto what : o.what) {
    if (what == BenchWhat::train || what == BenchWhat::profile) {
      emit(bench_train(cfg, o, shape, device, what == BenchWhat::profile));
      continue;
    }
    if (!model) {
      model = bench_model(cfg, o, shape, device);
      in = bench_inputs(o, shape, inputs_file, device);
    }
    if (!warm) {  // a short untimed solve: kernels chosen, memory pooled
      SolveSettings s;
      s.solver = Solver::euler;
      s.steps = 3;
      generate(*model, in.x0, {}, s);
      synchronize(device);
      warm = true;
    }
    reset_peak_memory(device);
    auto j = common(what, device);
    auto t0 = Clock::now();
    if (what == BenchWhat::nll) {
      VelocityFn vf = [&](const torch::Tensor& t, const torch::Tensor& x) {
        return (*model)(t.to(torch::kFloat32), x, {});
      };
      LikelihoodOptions lo;
      lo.atol = lo.rtol = o.tol;
      auto r = log_likelihood(vf, in.x1, lo, in.probe);
      const double mean_log_p = r.log_p.mean().item<double>();
      const double dt = seconds(t0);
      j["batch"] = in.x1.size(0);
      j["nfe"] = r.nfe;
      j["s_per_1000"] = dt / static_cast<double>(in.x1.size(0)) * 1000.0;
      j["mean_log_p"] = mean_log_p;
      j["tol"] = o.tol;
    } else {
      SolveSettings s;
      s.solver = what == BenchWhat::euler ? Solver::euler : Solver::dopri5;
      s.steps = o.euler_steps;
      s.atol = s.rtol = o.tol;
      s.cuda_graph = cfg.sample.cuda_graph;
      auto r = generate(*model, in.x0, {}, s);
      const double mean_x = r.x.mean().item<double>();
      if (r.graphed) j["impl"] = "fm_cuda_graph";
      j["cuda_graph"] = r.graphed;
      const double dt = seconds(t0);
      j["batch"] = in.x0.size(0);
      j["nfe"] = r.nfe;
      j["images_per_s"] = static_cast<double>(in.x0.size(0)) / dt;
      j["seconds"] = dt;
      j["mean_x"] = mean_x;
      if (what == BenchWhat::euler) j["steps"] = o.euler_steps;
      else j["tol"] = o.tol;
    }
    j["peak_mem_mib"] = peak_memory_mib(device);
    emit(j);
  }
  return out;
}

}  // namespace fm
