#include "train/trainer.h"

#include <functional>

#include <spdlog/spdlog.h>

#include "checkpoint/checkpointer.h"
#include "data/batch_sampler.h"
#include "dist/agree_to_stop.h"
#include "dist/grad_reducer.h"
#include "dist/output_lock.h"
#include "dist/world.h"
#include "io/file_util.h"
#include "kernels/kernels.h"
#include "train/lr_schedule.h"
#include "train/phema_snapshots.h"
#include "train/preflight.h"
#include "train/reporter.h"
#include "train/run_figures.h"
#include "train/train_step.h"
#include "train/train_step_graph.h"
#include "util/device.h"
#include "util/error.h"
#include "util/preemption.h"

namespace fm {

namespace {

// train.batch_size is the global batch: each rank trains on its own equal slice of it.
void check_batch_split(const TrainConfig& train, const dist::World& world) {
  if (train.batch_size % world.size() != 0)
    throw InputError("train.batch_size: " + std::to_string(train.batch_size) + " is not a multiple of the " +
                     std::to_string(world.size()) + " processes of this job; the global batch is split evenly");
}

// The config the run trains with: a resumed run's, checked against its checkpoint; a fresh run has no history,
// whatever config it was started from.
Config run_config(const Config& given, const CheckpointReader* ck) {
  if (!ck) {
    Config cfg = given;
    cfg.train.earlier_steps.clear();
    return cfg;
  }
  check_resume_config(*ck, given);
  return resumed_config(*ck, given);
}

Dataset load_training_data(const Config& cfg, const torch::Device& device) {
  Dataset data = load_dataset(cfg.data, device);
  if (!data.is_toy())
    spdlog::info("data {}: {} {}, {}{}", data.name, data.size(), data.is_pairs() ? "pairs" : "images",
                 describe_classes(data),
                 data.subset.empty() ? "" : "; data.limit takes " + data.subset);
  check_data_fits_model(cfg, data);
  check_pairs_coupling(cfg, data);
  return data;
}

// train.init_from: a fresh run starts from the model and EMA weights of another checkpoint (its optimizer, step and
// streams stay this run's own), e.g. a 2-rectified flow from the flow whose pairs it trains on.
void init_weights_from(const Config& cfg, TrainingSetup& setup, const std::vector<int64_t>& shape,
                       const torch::Device& device) {
  CheckpointReader init(cfg.train.init_from, device);
  check_init_from(init, cfg, shape);
  init.load_module("model", *setup.model);
  init.load_module("ema", *setup.ema_model);
  spdlog::info("train.init_from: model and EMA weights of {} (step {})", init.path(), init.step());
}

// Loads the checkpoint's state into the run's parts; returns its step.
int64_t restore(CheckpointReader& ck, TrainingSetup& setup, BatchSampler& sampler, bool fresh_epoch,
                Checkpointer& checkpointer) {
  ck.load_module("model", *setup.model);
  ck.load_module("ema", *setup.ema_model);
  ck.load_optimizer(setup.optimizer);
  restore_profiles(ck, setup.phema);
  if (!fresh_epoch) ck.load_sampler(sampler);
  ck.restore_rng(setup.params.front().device());
  checkpointer.start_branch(ck);
  spdlog::info("resumed from {} at step {}", ck.path(), ck.step());
  return ck.step();
}

// Identical starting weights on every rank, whatever each rank's initialisation or file read gave.
void broadcast_weights(dist::World& world, TrainingSetup& setup) {
  if (!world.distributed()) return;
  std::vector<torch::Tensor> state;
  for (auto* m : {setup.model.get(), setup.ema_model.get()}) {
    for (const auto& p : m->parameters()) state.push_back(p.detach());
    for (const auto& b : m->buffers()) state.push_back(b.detach());
  }
  world.broadcast(state, 0);
}

void log_start(const Config& cfg, const Dataset& data, const TrainingSetup& setup, const torch::Device& device,
               const dist::World& world, const std::string& out) {
  std::string where = device.str();
  if (device.is_cpu()) {
    // A build whose own kernels cannot use LibTorch's threads says so here, where it costs time.
    const int threads = at::get_num_threads(), own = kernels::kernel_threads();
    where += fmt::format(", {} thread{}", threads, threads == 1 ? "" : "s");
    if (own > 0 && own != threads) where += fmt::format(" (fm's own kernels: {})", own);
  }
  if (setup.channels_last) where += ", channels-last";
  spdlog::info("training {} on {} ({}), {} parameters, {} steps of batch {}, run directory {}",
               name_of(cfg.model.type), data.name, where, parameter_count(*setup.model), cfg.train.steps,
               cfg.train.batch_size, out);
  if (world.distributed())
    spdlog::info("{} processes, {} rows of each global batch of {} per process", world.size(),
                 cfg.train.batch_size / world.size(), cfg.train.batch_size);
}

// train.cuda_graph, unless the process is a rank of a launched job, even of one: the gradient reducer's hooks launch
// collectives from host logic while backward runs, which a graph would capture and freeze.
bool cuda_graph_allowed(const TrainConfig& train, const dist::World& world) {
  if (!train.cuda_graph || !world.process_group()) return train.cuda_graph;
  spdlog::warn("train.cuda_graph: a rank of a launched job ({} process{}) averages gradients from the host while "
               "backward runs; the step runs eagerly",
               world.size(), world.size() == 1 ? "" : "es");
  return false;
}

// Reads the guard at `step`. A run of train.max_nonfinite_steps skipped steps ends the training: the checkpoints
// written since it began (none, as no checkpoint is written while skips go on) are set aside, and the error names the
// newest one before it, after `flush_metrics` has recorded the skips. Returns the skipped steps in a row ending at
// `step` (0: the step was taken).
int64_t check_guard(NonFiniteGuard& guard, Checkpointer& checkpointer, int64_t step,
                    const std::function<void()>& flush_metrics) {
  const auto r = guard.read(step);
  if (!r.too_long) return r.current;
  flush_metrics();
  const SkippedRun run = *r.too_long;
  checkpointer.set_aside_from(run.first);
  const std::string from = checkpointer.latest().empty()
                               ? "No checkpoint was written before them: start afresh"
                               : "The newest checkpoint before them is " + checkpointer.latest() +
                                     ": continue from it with --resume auto";
  throw std::runtime_error("non-finite loss or gradients in " + std::to_string(run.length()) +
                           " consecutive steps (" + std::to_string(run.first) + " to " + std::to_string(run.last) +
                           "), every one skipped; stopping (train.max_nonfinite_steps is " +
                           std::to_string(guard.max_consecutive()) + "). " + from +
                           " after lowering train.lr or raising train.warmup_steps");
}

// Everything a checkpoint stores as floats, checked before each write.
std::vector<torch::Tensor> float_state(const TrainingSetup& setup) {
  std::vector<torch::Tensor> all = setup.params;
  for (const auto& v : {setup.ema_model->parameters(), setup.optimizer.exp_avg(), setup.optimizer.exp_avg_sq()})
    all.insert(all.end(), v.begin(), v.end());
  for (const auto& p : setup.phema.parameters()) all.push_back(p);
  return all;
}

}  // namespace

TrainResult train(const Config& config, const TrainOptions& opts) {
  // --- The job. From here on SIGTERM, SIGUSR1 and SIGINT only ask the loop to stop after its current step. ---
  install_stop_handlers();
  // One process per device in a torchrun or srun job (cuda:LOCAL_RANK); otherwise the configured device.
  // Every rank's config enters its job token: ranks started with different configs refuse to train together.
  const auto device =
      dist::init_world(config.device, std::chrono::milliseconds(static_cast<int64_t>(config.dist.timeout_s * 1000.0)),
                       to_json(config).dump());
  auto& world = dist::world();
  check_batch_split(config.train, world);
  configure_backend(device);

  // --- What to resume, chosen and checked before anything else in the run directory is touched. ---
  const std::string& out = opts.out_dir;
  const auto lock = dist::lock_output_dir(world, out, "--out");  // one writer of the run directory
  Checkpointer checkpointer(out, world, config.train.ckpt_every, config.train.keep_last);
  auto ck = checkpointer.choose_resume(opts.resume, device);
  const Config cfg = run_config(config, ck.get());
  const bool resumed = ck != nullptr;
  const int64_t last_step = opts.stop_after > 0 ? std::min(opts.stop_after, cfg.train.steps) : cfg.train.steps;
  if (ck && ck->step() >= last_step) {
    spdlog::info("{} is at step {}: this run has nothing left to train", ck->path(), ck->step());
    return {ck->step(), NAN, ck->path(), /*trained=*/false};
  }

  // --- The data and the parts of the step, with the checkpoint's state loaded into them. ---
  torch::manual_seed(static_cast<uint64_t>(cfg.seed));
  Dataset data = load_training_data(cfg, device);
  const auto shape = data.sample_shape();
  const bool fresh_epoch = ck && check_resume_data(*ck, cfg, data, shape);
  TrainingSetup setup(cfg, shape, device);
  BatchSampler sampler(data, cfg.data.hflip && !data.is_toy());
  int64_t step = ck ? restore(*ck, setup, sampler, fresh_epoch, checkpointer) : 0;
  if (!ck && !cfg.train.init_from.empty()) init_weights_from(cfg, setup, shape, device);
  ck.reset();  // the archive's tensors are no longer needed
  broadcast_weights(world, setup);
  // Rank 0 alone writes the run directory: config, metrics, TensorBoard, checkpoints, figures.
  if (world.is_main()) {
    make_dirs(out);
    write_file_atomic(out + "/config.json", to_json(cfg).dump(2) + "\n");
  }
  log_start(cfg, data, setup, device, world, out);

  // --- The loop and what it calls. ---
  dist::GradReducer reducer(setup.params, world);  // averages the gradients while backward runs
  TrainStep eager_step(setup, {&world, &reducer, static_cast<uint64_t>(cfg.seed)});
  GraphedTrainStep train_step(eager_step, device, cuda_graph_allowed(cfg.train, world));
  Reporter reporter(out, world, device, cfg.train, step, resumed);
  RunFigures figures(cfg, data, *setup.ema_model, out, device);
  PhemaSnapshots phema_snapshots(out, world, cfg.train, setup.phema, step);
  const DataIdentity data_id{data.name, data.size(), data.num_classes};
  // The guard's reading at step `s`; a stop it calls for first writes the metrics of the steps since the last report.
  auto read_guard = [&](int64_t s) {
    return check_guard(setup.guard, checkpointer, s, [&] {
      if (!reporter.due(s)) reporter.report(s, setup.params, setup.guard);
    });
  };
  // A checkpoint of a step taken: while skips go on, the newest checkpoint stays the one before them.
  auto checkpoint = [&](int64_t s) {
    if (const int64_t skipping = read_guard(s)) {
      spdlog::warn("no checkpoint at step {}: its last {} steps were skipped (non-finite); the newest stays {}", s,
                   skipping, checkpointer.latest().empty() ? "none" : checkpointer.latest());
      return;
    }
    reporter.off_the_clock([&] {
      checkpointer.save({&cfg, s, shape, data_id, setup.model.get(), setup.ema_model.get(), &setup.optimizer,
                         &sampler, data.class_names, device, setup.phema.on() ? &setup.phema : nullptr},
                        float_state(setup));
    });
  };
  const int64_t batch = cfg.train.batch_size;
  setup.model->train();

  while (step < last_step) {
    // One step on the next global batch.
    const double lr = lr_at(cfg.train, step);
    reporter.add(train_step(sampler.next(batch), step, lr), lr, reducer.last_exposed_wait_s());
    ++step;

    // Report; maybe save; read the guard where a run of skips could reach its limit; maybe draw.
    if (reporter.due(step)) reporter.report(step, setup.params, setup.guard);
    if (checkpointer.due(step, last_step))
      checkpoint(step);
    else if (reporter.due(step) || setup.guard.due(step))
      read_guard(step);
    if (phema_snapshots.due(step)) reporter.off_the_clock([&] { phema_snapshots.save(step); });
    if (world.is_main() && figures.grid_due(step))
      reporter.off_the_clock([&] { reporter.image("samples", figures.grid(step), step); });

    // Maybe stop: a signal to any rank stops every rank after this same step, with its checkpoint; at last_step the
    // run ends normally anyway.
    if (const int sig = dist::agree_to_stop(world); sig && step < last_step) {
      if (checkpointer.latest_step() != step) checkpoint(step);
      if (world.is_main())
        spdlog::warn("signal {}: stopped at step {} with checkpoint {}; continue with --resume auto", sig, step,
                     checkpointer.latest());
      dist::leave_on_stop(world, sig, /*state_saved=*/true);
    }
  }

  TrainResult result{step, reporter.last_loss(), checkpointer.latest(), /*trained=*/true};
  if (step < cfg.train.steps) {
    spdlog::info("stopped at step {} of {}; continue with --resume auto", step, cfg.train.steps);
    return result;
  }
  if (world.is_main()) {
    const std::string samples = figures.final_figures();
    if (!data.is_toy()) reporter.image("samples", samples, step);
  }
  return result;
}

}  // namespace fm
