#include "train/trainer.h"

#include <ATen/autocast_mode.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include <spdlog/spdlog.h>

#include "data/batch_sampler.h"
#include "interop/tensorboard_writer.h"
#include "io/file_util.h"
#include "nn/velocity_field.h"
#include "path/prob_path.h"
#include "sample/figures.h"
#include "checkpoint/checkpoint.h"
#include "train/ema.h"
#include "train/lr_schedule.h"
#include "util/progress.h"
#include "util/device.h"
#include "util/error.h"

namespace fm {
namespace fs = std::filesystem;

namespace {

// bf16 autocast for the forward pass on CUDA; fp32 master weights and optimizer state are untouched.
struct AutocastScope {
  bool on;
  explicit AutocastScope(bool enable) : on(enable) {
    if (!on) return;
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
  }
  ~AutocastScope() {
    if (!on) return;
    at::autocast::set_autocast_enabled(at::kCUDA, false);
    at::autocast::clear_cache();
  }
};

// Global gradient norm, and clipping to max_norm (> 0) without a host sync.
torch::Tensor clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return torch::zeros({});
  auto total = torch::stack(at::_foreach_norm(grads, 2)).to(torch::kFloat32).norm();
  if (max_norm > 0) at::_foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp_max(1.0));
  return total;
}

// Keeps the metrics lines up to `step` (a resumed run rewrites what came after its checkpoint).
void truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string line, kept;
  while (std::getline(in, line)) {
    try {
      if (nlohmann::json::parse(line).value("step", int64_t(0)) <= step) kept += line + "\n";
    } catch (const nlohmann::json::exception&) {
    }
  }
  write_file_atomic(path, kept);
}

}  // namespace

TrainResult train(const Config& cfg, const TrainOptions& opts) {
  const auto device = resolve_device(cfg.device);
  configure_backend(device);
  const std::string out = opts.out_dir, ckpt_dir = out + "/checkpoints";
  make_dirs(ckpt_dir);

  // Resolve what to resume from before anything in the run directory is touched.
  std::optional<std::string> resume_from;
  if (opts.resume == "auto") {
    resume_from = latest_checkpoint(ckpt_dir);
    if (!resume_from) spdlog::info("--resume auto: no checkpoint in {}, starting fresh", ckpt_dir);
  } else if (!opts.resume.empty()) {
    resume_from = opts.resume;
  } else if (latest_checkpoint(ckpt_dir)) {
    throw InputError(out + ": the run directory already holds checkpoints; pass --resume auto to continue it or "
                     "choose another --out");
  }

  torch::manual_seed(static_cast<uint64_t>(cfg.seed));
  Dataset data = load_dataset(cfg.data, device);
  const auto shape = data.sample_shape();
  if (cfg.model.type == "unet" && cfg.model.unet.num_classes > 0 && !data.labels.defined())
    throw InputError("model.unet.num_classes: " + data.name + " has no class labels");

  auto model = make_velocity_field(cfg.model, shape);
  auto ema_model = make_velocity_field(cfg.model, shape);
  model->to(device);
  ema_model->to(device);
  // Convolutions on CUDA run fastest in channels-last (NHWC) layout with bf16.
  const bool channels_last = device.is_cuda() && shape.size() == 3;
  if (channels_last)
    for (auto* m : {model.get(), ema_model.get()})
      for (auto& p : m->parameters())
        if (p.dim() == 4) p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
  Ema ema(*model, *ema_model, cfg.train.ema_decay);
  ema.reset();
  auto params = model->parameters();
  torch::optim::AdamW optimizer(params, torch::optim::AdamWOptions(cfg.train.lr)
                                            .betas({cfg.train.betas[0], cfg.train.betas[1]})
                                            .eps(cfg.train.eps)
                                            .weight_decay(cfg.train.weight_decay));
  BatchSampler sampler(data, cfg.data.hflip && !data.is_toy());
  auto path = make_path(cfg.path);

  int64_t step = 0;
  if (resume_from) {
    CheckpointReader ck(*resume_from, device);
    if (to_json(ck.config())["model"] != to_json(cfg)["model"] || ck.sample_shape() != shape)
      throw file_error(*resume_from, "was trained with another model config or data shape than this run's");
    ck.load_module("model", *model);
    ck.load_module("ema", *ema_model);
    ck.load_optimizer(optimizer);
    ck.load_sampler(sampler);
    ck.restore_rng();
    step = ck.step();
    truncate_metrics(out + "/metrics.jsonl", step);
    spdlog::info("resumed from {} at step {}", *resume_from, step);
  }
  write_file_atomic(out + "/config.json", to_json(cfg).dump(2) + "\n");
  spdlog::info("training {} on {} ({}), {} parameters, {} steps of batch {}, run directory {}", cfg.model.type,
               data.name, device.str(), parameter_count(*model), cfg.train.steps, cfg.train.batch_size, out);

  const bool autocast = device.is_cuda() && cfg.train.bf16;
  const int64_t bsz = cfg.train.batch_size;
  std::ofstream metrics(out + "/metrics.jsonl", std::ios::app);
  std::optional<TensorBoardWriter> tensorboard;
  if (cfg.train.tensorboard) tensorboard.emplace(out);
  Progress progress("train", cfg.train.steps, step, cfg.train.log_every);
  TrainResult result;
  torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions().device(device));
  torch::Tensor gnorm;
  int64_t interval_steps = 0;
  auto interval_t0 = std::chrono::steady_clock::now();
  model->train();

  auto save = [&](int64_t s) {
    std::string p = ckpt_dir + "/" + checkpoint_name(s);
    save_checkpoint(p, {&cfg, s, shape, model.get(), ema_model.get(), &optimizer, &sampler});
    prune_checkpoints(ckpt_dir, cfg.train.keep_last);
    result.checkpoint = p;
  };

  const int64_t last_step = opts.stop_after > 0 ? std::min(opts.stop_after, cfg.train.steps) : cfg.train.steps;
  // A grid of EMA samples from fixed noise (its own generator), so grids at different steps are comparable and the
  // training RNG stream is untouched.
  auto write_grid = [&](const std::string& file) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(cfg.seed) + 1);
    auto shp = shape;
    shp.insert(shp.begin(), 64);
    auto x0 = torch::randn(shp, gen).to(device);
    torch::Tensor lab;
    if (model->num_classes() > 0)
      lab = torch::arange(64, torch::TensorOptions().dtype(torch::kLong).device(device)) % model->num_classes();
    write_image_grid(file, generate(*ema_model, x0, lab, solve_settings(cfg.sample)).x);
  };

  while (step < last_step) {
    const double lr = lr_at(cfg.train, step);
    for (auto& g : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);

    Batch b = sampler.next(bsz);
    auto x0 = torch::randn_like(b.x);
    auto t = sample_times(cfg.time, bsz, b.x.options());
    auto ps = path->sample(x0, b.x, t);
    torch::Tensor labels = b.labels;
    if (labels.defined() && model->num_classes() > 0 && cfg.model.unet.class_dropout > 0) {
      // Train the unconditional model alongside (the null label) for classifier-free guidance.
      auto drop = torch::rand({bsz}, b.x.options()) < cfg.model.unet.class_dropout;
      labels = torch::where(drop, torch::full_like(labels, model->num_classes()), labels);
    }
    torch::Tensor v;
    {
      AutocastScope ac(autocast);
      v = (*model)(t, channels_last ? ps.x_t.contiguous(at::MemoryFormat::ChannelsLast) : ps.x_t, labels);
    }
    auto loss = torch::mse_loss(v.to(torch::kFloat32), ps.u_t);
    optimizer.zero_grad();
    loss.backward();
    // The norm costs a pass over every gradient: only when clipping, or for the metrics line.
    const bool log_now = (step + 1) % cfg.train.log_every == 0 || step + 1 == cfg.train.steps;
    if (cfg.train.grad_clip > 0 || log_now) gnorm = clip_grad_norm(params, cfg.train.grad_clip);
    optimizer.step();
    ema.update();
    ++step;
    loss_sum += loss.detach();
    ++interval_steps;

    if (step % cfg.train.log_every == 0 || step == cfg.train.steps) {
      double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - interval_t0).count();
      double mean_loss = loss_sum.item<double>() / interval_steps;
      double sps = interval_steps / std::max(dt, 1e-9);
      nlohmann::json m = {{"step", step},
                          {"loss", mean_loss},
                          {"lr", lr},
                          {"grad_norm", gnorm.item<double>()},
                          {"steps_per_s", sps},
                          {"samples_per_s", sps * bsz},
                          {"peak_mem_mib", peak_memory_mib(device)},
                          {"elapsed_s", progress.elapsed_s()}};
      metrics << m.dump() << "\n" << std::flush;
      if (tensorboard) tensorboard->scalars(m);
      char extra[160];
      std::snprintf(extra, sizeof extra, "loss %.4f lr %.2e %.0f samples/s", mean_loss, lr, sps * bsz);
      progress.update(step, extra, true);
      result.last_loss = mean_loss;
      loss_sum.zero_();
      interval_steps = 0;
      interval_t0 = std::chrono::steady_clock::now();
    }
    if (step % cfg.train.ckpt_every == 0 || step == last_step) save(step);
    if (!data.is_toy() && cfg.train.sample_every > 0 && step % cfg.train.sample_every == 0 && step != cfg.train.steps) {
      char name[64];
      std::snprintf(name, sizeof name, "/grid_%09lld.png", static_cast<long long>(step));
      write_grid(out + name);
      if (tensorboard) tensorboard->image("samples", out + name, step);
    }
  }
  result.step = step;
  if (step < cfg.train.steps) {
    spdlog::info("stopped at step {} of {}; continue with --resume auto", step, cfg.train.steps);
    return result;
  }

  // Figures from the EMA weights, with their own generator so they do not depend on where training stopped.
  if (data.is_toy()) {
    torch::manual_seed(static_cast<uint64_t>(cfg.seed) + 1);
    write_toy_figures(*ema_model, data.toy, solve_settings(cfg.sample), cfg.sample.n, out, device);
    spdlog::info("wrote {0}/samples.png and {0}/trajectories.png", out);
  } else {
    write_grid(out + "/samples.png");
    if (tensorboard) tensorboard->image("samples", out + "/samples.png", step);
    spdlog::info("wrote {}/samples.png", out);
  }
  return result;
}

}  // namespace fm
