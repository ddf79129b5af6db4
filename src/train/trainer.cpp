#include "train/trainer.h"

#include <ATen/autocast_mode.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

#include "data/batch_sampler.h"
#include "io/file_util.h"
#include "nn/velocity_field.h"
#include "path/prob_path.h"
#include "train/cfm_objective.h"
#include "sample/figures.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/seal.h"
#include "train/ema.h"
#include "train/lr_schedule.h"
#include "train/preflight.h"
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

TrainResult train(const Config& config, const TrainOptions& opts) {
  const auto device = resolve_device(config.device);
  configure_backend(device);
  const std::string out = opts.out_dir, ckpt_dir = out + "/checkpoints";

  // Resolve what to resume from before anything in the run directory is touched. `ck` holds the opened, verified
  // checkpoint; nothing is created on disk until every check below has passed.
  std::optional<CheckpointReader> ck;
  if (opts.resume == "auto") {
    auto all = list_checkpoints(ckpt_dir);
    for (auto it = all.rbegin(); it != all.rend() && !ck; ++it) {
      try {
        ck.emplace(it->second, device);
      } catch (const CorruptCheckpoint& e) {
        spdlog::warn("--resume auto: skipping {}", e.what());
      }
    }
    if (!ck && !all.empty())
      throw InputError(ckpt_dir + ": none of its " + std::to_string(all.size()) +
                       " checkpoints verifies; move them aside to start afresh");
    if (!ck) spdlog::info("--resume auto: no checkpoint in {}, starting fresh", ckpt_dir);
  } else if (!opts.resume.empty()) {
    ck.emplace(opts.resume, device);
  } else if (latest_checkpoint(ckpt_dir)) {
    throw InputError(out + ": the run directory already holds checkpoints; pass --resume auto to continue it or "
                     "choose another --out");
  }
  Config cfg = config;
  if (ck) {
    check_resume_config(*ck, cfg);
    cfg = resumed_config(*ck, cfg);
  } else {
    cfg.train.earlier_steps.clear();  // a fresh run has no history, whatever config it was started from
  }

  torch::manual_seed(static_cast<uint64_t>(cfg.seed));
  Dataset data = load_dataset(cfg.data, device);
  const auto shape = data.sample_shape();
  if (!data.is_toy())
    spdlog::info("data {}: {} images, {}{}", data.name, data.size(), describe_classes(data),
                 data.subset.empty() ? "" : "; data.limit takes " + data.subset);
  check_data_fits_model(cfg, data);
  const bool fresh_epoch = ck && check_resume_data(*ck, cfg, data, shape);

  auto model = make_velocity_field(cfg.model, cfg.path, shape);
  auto ema_model = make_velocity_field(cfg.model, cfg.path, shape);
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
  CfmObjective objective(cfg, *path, model->num_classes());

  int64_t step = 0;
  TrainResult result;
  if (ck) {
    ck->load_module("model", *model);
    ck->load_module("ema", *ema_model);
    ck->load_optimizer(optimizer);
    if (!fresh_epoch) ck->load_sampler(sampler);
    ck->restore_rng();
    step = ck->step();
    result.checkpoint = ck->path();
    // A resume from an older checkpoint starts a new branch: the newer checkpoints of the abandoned one go aside.
    for (const auto& moved : move_aside_after(ckpt_dir, step, ck->path()))
      spdlog::warn("resuming at step {} abandons a newer checkpoint: moved it to {}", step, moved);
    spdlog::info("resumed from {} at step {}", ck->path(), step);
    ck.reset();  // the archive's tensors are no longer needed
  }
  make_dirs(out);
  if (step > 0) truncate_metrics(out + "/metrics.jsonl", step);
  write_file_atomic(out + "/config.json", to_json(cfg).dump(2) + "\n");
  spdlog::info("training {} on {} ({}), {} parameters, {} steps of batch {}, run directory {}", cfg.model.type,
               data.name, device.str(), parameter_count(*model), cfg.train.steps, cfg.train.batch_size, out);

  const bool autocast = device.is_cuda() && cfg.train.bf16;
  const int64_t bsz = cfg.train.batch_size;
  std::ofstream metrics(out + "/metrics.jsonl", std::ios::app);
  Progress progress("train", cfg.train.steps, step, cfg.train.log_every);
  torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions().device(device));
  torch::Tensor gnorm;
  int64_t interval_steps = 0;
  auto interval_t0 = std::chrono::steady_clock::now();
  model->train();

  const DataIdentity data_id{data.name, data.size(), data.num_classes};
  auto save = [&](int64_t s) {
    make_dirs(ckpt_dir);  // only now: a run that fails before its first checkpoint leaves no empty checkpoints/
    std::string p = ckpt_dir + "/" + checkpoint_name(s);
    save_checkpoint(p, {&cfg, s, shape, data_id, model.get(), ema_model.get(), &optimizer, &sampler,
                        data.class_names});
    prune_checkpoints(ckpt_dir, cfg.train.keep_last);  // only after the new one is safely written
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
    write_image_grid(file, generate(*ema_model, x0, lab, solve_settings(cfg.sample)).x, model->num_classes());
  };

  while (step < last_step) {
    const double lr = lr_at(cfg.train, step);
    for (auto& g : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);

    auto loss = objective.loss(sampler.next(bsz), [&](const auto& t, const auto& x, const auto& labels) {
      AutocastScope ac(autocast);
      return model->prediction(t, channels_last ? x.contiguous(at::MemoryFormat::ChannelsLast) : x, labels);
    });
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
    spdlog::info("wrote {}/samples.png", out);
  }
  return result;
}

}  // namespace fm
