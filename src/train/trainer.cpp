#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>

#include <spdlog/spdlog.h>

#include "data/batch_sampler.h"
#include "dist/grad_reducer.h"
#include "dist/world.h"
#include "interop/tensorboard_writer.h"
#include "io/file_util.h"
#include "nn/velocity_field.h"
#include "path/prob_path.h"
#include "train/cfm_objective.h"
#include "sample/figures.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/seal.h"
#include "train/adamw.h"
#include "train/lr_schedule.h"
#include "train/metrics_log.h"
#include "train/nonfinite_guard.h"
#include "train/preflight.h"
#include "train/train_step.h"
#include "train/train_step_graph.h"
#include "util/device.h"
#include "util/error.h"
#include "util/preemption.h"
#include "util/parallel.h"
#include "util/progress.h"

namespace fm {
namespace fs = std::filesystem;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Sum and sum of squares of every parameter in float64: equal on every rank while the ranks agree.
torch::Tensor param_checksum(const std::vector<torch::Tensor>& params) {
  torch::NoGradGuard no_grad;
  auto sum = torch::zeros({2}, torch::TensorOptions().dtype(torch::kFloat64).device(params.front().device()));
  for (const auto& p : params) {
    auto d = p.detach().to(torch::kFloat64);
    sum += torch::stack({d.sum(), d.square().sum()});
  }
  return sum;
}

}  // namespace

TrainResult train(const Config& config, const TrainOptions& opts) {
  // From here on SIGTERM, SIGUSR1 and SIGINT only ask the loop to checkpoint and stop after its current step.
  install_stop_handlers();
  // One process per device in a torchrun or srun job (cuda:LOCAL_RANK); otherwise the configured device.
  const auto device = dist::init_world(
      config.device, std::chrono::milliseconds(static_cast<int64_t>(config.dist.timeout_s * 1000.0)));
  auto& world = dist::world();
  const bool main_rank = world.is_main();
  // train.batch_size is the global batch: each rank trains on its own equal slice of it.
  if (config.train.batch_size % world.size() != 0)
    throw InputError("train.batch_size: " + std::to_string(config.train.batch_size) + " is not a multiple of the " +
                     std::to_string(world.size()) + " processes of this job; the global batch is split evenly");
  configure_backend(device);
  const std::string out = opts.out_dir, ckpt_dir = out + "/checkpoints";

  // Resolve what to resume from before anything in the run directory is touched. `ck` holds the opened, verified
  // checkpoint; nothing is created on disk until every check below has passed.
  // unique_ptr, not optional: clang (the sanitizer build) cannot instantiate optional over LibTorch's InputArchive.
  std::unique_ptr<CheckpointReader> ck;
  if (opts.resume == "auto") {
    auto all = list_checkpoints(ckpt_dir);
    for (auto it = all.rbegin(); it != all.rend() && !ck; ++it) {
      try {
        ck = std::make_unique<CheckpointReader>(it->second, device);
      } catch (const CorruptCheckpoint& e) {
        spdlog::warn("--resume auto: skipping {}", e.what());
      }
    }
    if (!ck && !all.empty())
      throw InputError(ckpt_dir + ": none of its " + std::to_string(all.size()) +
                       " checkpoints verifies; move them aside to start afresh");
    if (!ck) spdlog::info("--resume auto: no checkpoint in {}, starting fresh", ckpt_dir);
  } else if (!opts.resume.empty()) {
    ck = std::make_unique<CheckpointReader>(opts.resume, device);
  } else if (latest_checkpoint(ckpt_dir)) {
    throw InputError(out + ": the run directory already holds checkpoints; pass --resume auto to continue it or "
                     "choose another --out");
  }
  // Every rank resumes from the same checkpoint; ranks that see different run directories (--out not on a shared
  // file system) would silently train apart.
  if (world.distributed()) {
    auto mine = torch::tensor({ck ? ck->step() : int64_t(-1)}, torch::TensorOptions().dtype(torch::kInt64).device(device));
    auto steps = world.all_gather_cat(mine).cpu();
    if (!torch::equal(steps, steps[0].expand_as(steps)))
      throw InputError(out + ": the ranks found different checkpoints to resume (steps by rank, -1 none: " +
                       nlohmann::json(std::vector<int64_t>(steps.data_ptr<int64_t>(),
                                                           steps.data_ptr<int64_t>() + steps.numel())).dump() +
                       "); is --out on a file system every node shares?");
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

  TrainingSetup setup(cfg, shape, device);
  auto &model = setup.model, &ema_model = setup.ema_model;
  auto& params = setup.params;
  auto& optimizer = setup.optimizer;
  auto& guard = setup.guard;
  BatchSampler sampler(data, cfg.data.hflip && !data.is_toy());

  int64_t step = 0;
  TrainResult result;
  const bool resumed = ck != nullptr;
  if (ck) {
    ck->load_module("model", *model);
    ck->load_module("ema", *ema_model);
    ck->load_optimizer(optimizer);
    if (!fresh_epoch) ck->load_sampler(sampler);
    ck->restore_rng();
    step = ck->step();
    result.checkpoint = ck->path();
    // A resume from an older checkpoint starts a new branch: the newer checkpoints of the abandoned one go aside.
    if (main_rank)
      for (const auto& moved : move_aside_after(ckpt_dir, step, ck->path()))
        spdlog::warn("resuming at step {} abandons a newer checkpoint: moved it to {}", step, moved);
    spdlog::info("resumed from {} at step {}", ck->path(), step);
    ck.reset();  // the archive's tensors are no longer needed
  }
  // Identical starting weights on every rank, whatever each rank's initialisation or file read gave.
  if (world.distributed()) {
    std::vector<torch::Tensor> state;
    for (auto* m : {model.get(), ema_model.get()}) {
      for (const auto& p : m->parameters()) state.push_back(p.detach());
      for (const auto& b : m->buffers()) state.push_back(b.detach());
    }
    world.broadcast(state, 0);
  }
  // Rank 0 alone writes the run directory: config, metrics, TensorBoard, checkpoints, figures.
  if (main_rank) {
    make_dirs(out);
    write_file_atomic(out + "/config.json", to_json(cfg).dump(2) + "\n");
  }
  std::string where = device.str();
  if (device.is_cpu()) {
    // A build whose own kernels cannot use LibTorch's threads (util/parallel.h) says so here, where it costs time.
    const int threads = at::get_num_threads(), kernels = kernel_threads();
    where += fmt::format(", {} thread{}", threads, threads == 1 ? "" : "s");
    if (kernels != threads) where += fmt::format(" (fm's own kernels: {})", kernels);
  }
  if (setup.channels_last) where += ", channels-last";
  spdlog::info("training {} on {} ({}), {} parameters, {} steps of batch {}, run directory {}", cfg.model.type,
               data.name, where, parameter_count(*model), cfg.train.steps, cfg.train.batch_size, out);
  if (world.distributed())
    spdlog::info("{} processes, {} rows of each global batch of {} per process", world.size(),
                 cfg.train.batch_size / world.size(), cfg.train.batch_size);

  const int64_t bsz = cfg.train.batch_size;
  std::optional<MetricsLog> metrics;
  if (main_rank) metrics.emplace(out + "/metrics.jsonl", resumed ? std::optional<int64_t>(step) : std::nullopt);
  std::optional<TensorBoardWriter> tensorboard;
  if (cfg.train.tensorboard && main_rank) tensorboard.emplace(out);
  Progress progress("train", cfg.train.steps, step, cfg.train.log_every);
  // Gradients averaged over the ranks in buckets while backward runs (a no-op in one process).
  dist::GradReducer reducer(params, world);
  const RowShard shard{world.rank(), world.size()};
  torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions().device(device));
  torch::Tensor gnorm;
  TrainStep eager_step = setup.step();
  eager_step.shard = shard;
  eager_step.reducer = &reducer;
  eager_step.world = &world;
  eager_step.forward_rng = ForwardRngSeed{static_cast<uint64_t>(cfg.seed), world.rank()};
  bool cuda_graph = cfg.train.cuda_graph;
  if (cuda_graph && world.distributed()) {
    // The gradient buckets are launched from autograd hooks by host logic that a graph would freeze.
    spdlog::warn("train.cuda_graph: a job of {} processes averages gradients from the host while backward runs; "
                 "the step runs eagerly",
                 world.size());
    cuda_graph = false;
  }
  GraphedTrainStep train_step(eager_step, device, cuda_graph, cfg.path.coupling);
  int64_t interval_steps = 0;
  double sync_wait_s = 0.0;  // the gradient all-reduce's share that backward did not hide, this interval
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
    // Every rank checks (their states are equal), so all stop alike; rank 0 alone writes.
    if (!all_finite(float_state))
      throw std::runtime_error("non-finite values in the weights or optimizer state at step " + std::to_string(s) +
                               "; no checkpoint written, the earlier ones are kept. Lower train.lr or raise "
                               "train.warmup_steps, and continue from one with --resume PATH");
    if (!main_rank) {
      result.checkpoint = ckpt_dir + "/" + checkpoint_name(s);
      return;
    }
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

    eager_step.step = step;
    auto [loss, grad_norm, found_inf] = train_step(sampler.next(bsz), lr);
    sync_wait_s += reducer.last_exposed_wait_s();
    gnorm = grad_norm;
    ++step;
    loss_sum += torch::where(found_inf > 0, torch::zeros_like(loss), loss.detach());
    ++interval_steps;

    if (step % cfg.train.log_every == 0 || step == cfg.train.steps) {
      auto checksum = param_checksum(params);
      if (world.distributed()) {
        auto all = world.all_gather_cat(checksum.unsqueeze(0)).cpu();
        if (!torch::equal(all, all[0].expand_as(all)))
          throw std::runtime_error("rank " + std::to_string(world.rank()) + ": the ranks' weights differ at step " +
                                   std::to_string(step) + " (a nondeterministic reduction or a bug); stopping");
      }
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
                          {"world_size", world.size()},
                          {"param_checksum", checksum[0].item<double>()},
                          {"elapsed_s", (metrics ? metrics->elapsed_before() : 0.0) + progress.elapsed_s()}};
      // Host time: it measures the exposed wait on Gloo; NCCL's wait only orders the streams.
      if (world.distributed()) m["grad_sync_wait_s"] = sync_wait_s / std::max<int64_t>(interval_steps, 1);
      if (metrics) metrics->write(m);
      if (tensorboard) tensorboard->scalars(m);
      char extra[160];
      std::snprintf(extra, sizeof extra, "loss %.4f lr %.2e %.0f samples/s%s", mean_loss, lr, sps * bsz,
                    skipped ? (", " + std::to_string(skipped) + " non-finite steps skipped").c_str() : "");
      if (main_rank) progress.update(step, extra, true);
      result.last_loss = mean_loss;
      loss_sum.zero_();
      interval_steps = 0;
      sync_wait_s = 0.0;
      interval_pause_s = 0.0;
      interval_t0 = std::chrono::steady_clock::now();
    }
    const bool ckpt_now = step % cfg.train.ckpt_every == 0 || step == last_step;
    // A run of skipped steps is caught within one log interval, one checkpoint or max_nonfinite_steps steps, and
    // before a checkpoint of a diverged run is written.
    if (ckpt_now || step % cfg.train.log_every == 0 || step % cfg.train.max_nonfinite_steps == 0)
      guard.check_consecutive(step);
    if (ckpt_now) save(step);
    if (main_rank && !data.is_toy() && cfg.train.sample_every > 0 && step % cfg.train.sample_every == 0 &&
        step != cfg.train.steps) {
      auto t0 = std::chrono::steady_clock::now();
      char name[64];
      std::snprintf(name, sizeof name, "/grid_%09lld.png", static_cast<long long>(step));
      write_grid(out + name);
      if (tensorboard) tensorboard->image("samples", out + name, step);
      interval_pause_s += seconds_since(t0);
    }
    // Preemption: the step is complete; checkpoint it (unless just done) and leave with exit 75. At last_step the
    // run ends normally anyway.
    // One rank's signal stops every rank after this same step (a collective each step, so a stop is agreed at once).
    if (world.any(stop_requested()) && step < last_step) {
      if (!ckpt_now) save(step);
      // Nobody leaves before rank 0's checkpoint is complete: torchrun ends the others once one worker has exited.
      world.barrier();
      if (world.distributed()) ignore_stop_signals();
      int sig = stop_signal();  // 0 on a rank that was stopped by another's signal: report the one that came
      if (world.distributed())
        sig = world.all_gather_cat(torch::tensor({sig}, torch::TensorOptions().device(device))).max().item<int>();
      if (main_rank)
        spdlog::warn("signal {}: stopped at step {} with checkpoint {}; continue with --resume auto", sig, step,
                     result.checkpoint);
      throw StopRequested{sig};
    }
  }
  result.step = step;
  if (step < cfg.train.steps) {
    spdlog::info("stopped at step {} of {}; continue with --resume auto", step, cfg.train.steps);
    return result;
  }

  // Figures from the EMA weights, with their own generator so they do not depend on where training stopped.
  if (!main_rank) return result;
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
