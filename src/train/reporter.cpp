#include "train/reporter.h"

#include <cmath>
#include <cstdio>

#include "util/device.h"

namespace fm {
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

Reporter::Reporter(const std::string& run_dir, dist::World& world, const torch::Device& device,
                   const TrainConfig& train, int64_t start_step, bool resumed)
    : world_(world),
      device_(device),
      log_every_(train.log_every),
      total_steps_(train.steps),
      batch_(train.batch_size),
      loss_sum_(torch::zeros({}, torch::TensorOptions().device(device))),
      t0_(std::chrono::steady_clock::now()) {
  if (world.is_main()) {
    metrics_.emplace(run_dir + "/metrics.jsonl", resumed ? std::optional<int64_t>(start_step) : std::nullopt);
    skipped_total_ = metrics_->skipped_before();
    if (train.tensorboard) tensorboard_.emplace(run_dir);
  }
  progress_.emplace("train", train.steps, start_step, train.log_every);
}

void Reporter::add(const StepResult& r, double lr, double exposed_sync_wait_s) {
  loss_sum_ += torch::where(r.found_inf > 0, torch::zeros_like(r.loss), r.loss.detach());
  grad_norm_ = r.grad_norm;
  lr_ = lr;
  sync_wait_s_ += exposed_sync_wait_s;
  ++steps_;
}

void Reporter::report(int64_t step, const std::vector<torch::Tensor>& params, NonFiniteGuard& guard) {
  auto checksum = param_checksum(params);
  if (world_.distributed()) {
    auto all = world_.all_gather_cat(checksum.unsqueeze(0)).cpu();
    if (!torch::equal(all, all[0].expand_as(all)))
      throw std::runtime_error("rank " + std::to_string(world_.rank()) + ": the ranks' weights differ at step " +
                               std::to_string(step) + " (a nondeterministic reduction or a bug); stopping");
  }
  const int64_t skipped = guard.take_interval_skips();
  skipped_total_ += skipped;
  const double dt = seconds_since(t0_) - pause_s_;
  const double mean_loss = steps_ > skipped ? loss_sum_.item<double>() / static_cast<double>(steps_ - skipped) : NAN;
  const double sps = static_cast<double>(steps_) / std::max(dt, 1e-9);
  nlohmann::json m = {{"step", step},
                      {"loss", mean_loss},
                      {"lr", lr_},
                      {"grad_norm", grad_norm_.item<double>()},
                      {"skipped_steps", skipped},
                      {"skipped_steps_total", skipped_total_},
                      {"steps_per_s", sps},
                      {"samples_per_s", sps * static_cast<double>(batch_)},
                      {"peak_mem_mib", peak_memory_mib(device_)},
                      {"world_size", world_.size()},
                      {"param_checksum", checksum[0].item<double>()},
                      {"elapsed_s", (metrics_ ? metrics_->elapsed_before() : 0.0) + progress_->elapsed_s()}};
  // Host time: it measures the exposed wait on Gloo; NCCL's wait only orders the streams.
  if (world_.distributed()) m["grad_sync_wait_s"] = sync_wait_s_ / static_cast<double>(std::max<int64_t>(steps_, 1));
  if (metrics_) metrics_->write(m);
  if (tensorboard_) tensorboard_->scalars(m);
  char extra[160];
  std::snprintf(extra, sizeof extra, "loss %.4f lr %.2e %.0f samples/s%s", mean_loss, lr_,
                sps * static_cast<double>(batch_),
                skipped ? (", " + std::to_string(skipped) + " non-finite steps skipped").c_str() : "");
  if (world_.is_main()) progress_->update(step, extra, true);
  last_loss_ = mean_loss;
  loss_sum_.zero_();
  steps_ = 0;
  sync_wait_s_ = 0.0;
  pause_s_ = 0.0;
  t0_ = std::chrono::steady_clock::now();
}

void Reporter::image(const std::string& tag, const std::string& png_path, int64_t step) {
  if (tensorboard_) tensorboard_->image(tag, png_path, step);
}

}  // namespace fm
