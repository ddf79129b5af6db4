#include "train/run_figures.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cstdio>

#include <spdlog/spdlog.h>

#include "data/toy2d.h"
#include "sample/figures.h"

namespace fm {

RunFigures::RunFigures(const Config& cfg, const Dataset& data, VelocityField& ema_model, const std::string& run_dir,
                       const torch::Device& device)
    : cfg_(cfg), data_(data), model_(ema_model), dir_(run_dir), device_(device) {}

bool RunFigures::grid_due(int64_t step) const {
  return data_.sample_shape().size() != 1 && cfg_.train.sample_every > 0 && step % cfg_.train.sample_every == 0 &&
         step != cfg_.train.steps;
}

void RunFigures::write_grid(const std::string& path) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(cfg_.seed) + 1);
  auto shape = data_.sample_shape();
  shape.insert(shape.begin(), 64);
  auto x0 = torch::randn(shape, gen).to(device_);
  torch::Tensor labels;
  if (model_.num_classes() > 0)
    labels = torch::arange(64, torch::TensorOptions().dtype(torch::kLong).device(device_)) % model_.num_classes();
  write_image_grid(path, generate(model_, x0, labels, solve_settings(cfg_)).x, model_.num_classes());
}

std::string RunFigures::grid(int64_t step) {
  char name[64];
  std::snprintf(name, sizeof name, "/grid_%09lld.png", static_cast<long long>(step));
  write_grid(dir_ + name);
  return dir_ + name;
}

std::string RunFigures::final_figures() {
  const std::string samples = dir_ + "/samples.png";
  if (data_.sample_shape().size() == 1) {  // 2-D points: a toy, or the pairs of a toy's flow (their samples x1)
    torch::manual_seed(static_cast<uint64_t>(cfg_.seed) + 1);
    const int64_t n = cfg_.sample.n;
    auto points = data_.is_toy() ? sample_toy(*data_.toy, n, torch::TensorOptions().device(device_))
                                 : data_.pair_x1.narrow(0, 0, std::min(n, data_.size()));
    write_toy_figures(model_, points, solve_settings(cfg_), n, dir_, device_);
    spdlog::info("wrote {0}/samples.png and {0}/trajectories.png", dir_);
  } else {
    write_grid(samples);
    spdlog::info("wrote {}", samples);
  }
  return samples;
}

}  // namespace fm
