#include "train/trainer.h"

#include <chrono>
#include <cmath>
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
#include "train/cfm_objective.h"
#include "sample/figures.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/seal.h"
#include "train/adamw.h"
#include "train/ema.h"
#include "train/lr_schedule.h"
#include "train/metrics_log.h"
#include "train/nonfinite_guard.h"
#include "train/preflight.h"
#include "train/train_step.h"
#include "train/train_step_graph.h"
#include "util/device.h"
#include "util/error.h"
#include "util/preemption.h"
#include "util/progress.h"

namespace fm {
namespace fs = std::filesystem;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TrainResult train(const Config& config, const TrainOptions& opts) {
  // From here on SIGTERM, SIGUSR1 and SIGINT only ask the loop to checkpoint and stop after its current step.
  install_stop_handlers();
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
  AdamW optimizer(params, {cfg.train.betas[0], cfg.train.betas[1], cfg.train.eps, cfg.train.weight_decay});
  BatchSampler sampler(data, cfg.data.hflip && !data.is_toy());
  auto path = make_path(cfg.path);
  CfmObjective objective(cfg, *path, model->num_classes());

  int64_t step = 0;
  TrainResult result;
  const bool resumed = ck.has_value();
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
  write_file_atomic(out + "/config.json", to_json(cfg).dump(2) + "\n");
  spdlog::info("training {} on {} ({}), {} parameters, {} steps of batch {}, run directory {}", cfg.model.type,
               data.name, device.str(), parameter_count(*model), cfg.train.steps, cfg.train.batch_size, out);

  const bool autocast = device.is_cuda() && cfg.train.bf16;
  const int64_t bsz = cfg.train.batch_size;
  MetricsLog metrics(out + "/metrics.jsonl", resumed ? std::optional<int64_t>(step) : std::nullopt);
  std::optional<TensorBoardWriter> tensorboard;
  if (cfg.train.tensorboard) tensorboard.emplace(out);
  Progress progress("train", cfg.train.steps, step, cfg.train.log_every);
  NonFiniteGuard guard(device, cfg.train.max_nonfinite_steps);
  torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions().device(device));
  torch::Tensor gnorm;
  TrainStep eager_step{*model, objective, optimizer, ema, guard, params, cfg.train.grad_clip, autocast, channels_last};
  GraphedTrainStep train_step(eager_step, device, cfg.train.cuda_graph, cfg.path.coupling);
  int64_t interval_steps = 0;
  auto interval_t0 = std::chrono::steady_clock::now();
  double interval_pause_s = 0.0;  // spent writing checkpoints and grids: left out of the throughput
  model->train();

  const DataIdentity data_id{data.name, data.size(), data.num_classes};
  // Everything a checkpoint stores as floats; checked before each write so that no checkpoint holds an inf or NaN.
  std::vector<torch::Tensor> float_state = params;
  for (const auto& v : {ema_model->parameters(), optimizer.exp_avg(), optimizer.exp_avg_sq()})
    float_state.insert(float_state.end(), v.begin(), v.end());
  auto save = [&](int64_t s) {
    auto t0 = std::chrono::steady_clock::now();
    if (!all_finite(float_state))
      throw std::runtime_error("non-finite values in the weights or optimizer state at step " + std::to_string(s) +
                               "; no checkpoint written, the earlier ones are kept. Lower train.lr or raise "
                               "train.warmup_steps, and continue from one with --resume PATH");
    make_dirs(ckpt_dir);  // only now: a run that fails before its first checkpoint leaves no empty checkpoints/
    std::string p = ckpt_dir + "/" + checkpoint_name(s);
    save_checkpoint(p, {&cfg, s, shape, data_id, model.get(), ema_model.get(), &optimizer, &sampler,
                        data.class_names});
    prune_checkpoints(ckpt_dir, cfg.train.keep_last);  // only after the new one is safely written
    result.checkpoint = p;
    interval_pause_s += seconds_since(t0);
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

    auto [loss, grad_norm, found_inf] = train_step(sampler.next(bsz), lr);
    gnorm = grad_norm;
    ++step;
    loss_sum += torch::where(found_inf > 0, torch::zeros_like(loss), loss.detach());
    ++interval_steps;

    if (step % cfg.train.log_every == 0 || step == cfg.train.steps) {
      const int64_t skipped = guard.take_interval_skips();
      const double dt = seconds_since(interval_t0) - interval_pause_s;
      const double mean_loss = interval_steps > skipped ? loss_sum.item<double>() / (interval_steps - skipped) : NAN;
      const double sps = interval_steps / std::max(dt, 1e-9);
      nlohmann::json m = {{"step", step},
                          {"loss", mean_loss},
                          {"lr", lr},
                          {"grad_norm", gnorm.item<double>()},
                          {"skipped_steps", skipped},
                          {"skipped_steps_total", step - optimizer.updates()},
                          {"steps_per_s", sps},
                          {"samples_per_s", sps * bsz},
                          {"peak_mem_mib", peak_memory_mib(device)},
                          {"elapsed_s", metrics.elapsed_before() + progress.elapsed_s()}};
      metrics.write(m);
      if (tensorboard) tensorboard->scalars(m);
      char extra[160];
      std::snprintf(extra, sizeof extra, "loss %.4f lr %.2e %.0f samples/s%s", mean_loss, lr, sps * bsz,
                    skipped ? (", " + std::to_string(skipped) + " non-finite steps skipped").c_str() : "");
      progress.update(step, extra, true);
      result.last_loss = mean_loss;
      loss_sum.zero_();
      interval_steps = 0;
      interval_pause_s = 0.0;
      interval_t0 = std::chrono::steady_clock::now();
    }
    const bool ckpt_now = step % cfg.train.ckpt_every == 0 || step == last_step;
    // A run of skipped steps is caught within one log interval, one checkpoint or max_nonfinite_steps steps, and
    // before a checkpoint of a diverged run is written.
    if (ckpt_now || step % cfg.train.log_every == 0 || step % cfg.train.max_nonfinite_steps == 0)
      guard.check_consecutive(step);
    if (ckpt_now) save(step);
    if (!data.is_toy() && cfg.train.sample_every > 0 && step % cfg.train.sample_every == 0 && step != cfg.train.steps) {
      auto t0 = std::chrono::steady_clock::now();
      char name[64];
      std::snprintf(name, sizeof name, "/grid_%09lld.png", static_cast<long long>(step));
      write_grid(out + name);
      if (tensorboard) tensorboard->image("samples", out + name, step);
      interval_pause_s += seconds_since(t0);
    }
    // Preemption: the step is complete; checkpoint it (unless just done) and leave with exit 75. At last_step the
    // run ends normally anyway.
    if (stop_requested() && step < last_step) {
      if (!ckpt_now) save(step);
      spdlog::warn("signal {}: stopped at step {} with checkpoint {}; continue with --resume auto", stop_signal(),
                   step, result.checkpoint);
      throw StopRequested{stop_signal()};
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
