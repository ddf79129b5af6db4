#include "sample/sample_run.h"

#include <spdlog/spdlog.h>

#include "data/toy2d.h"
#include "io/file_util.h"
#include "io/image.h"
#include "io/npy.h"
#include "sample/figures.h"
#include "sample/straightness.h"
#include "checkpoint/checkpoint.h"
#include "util/progress.h"
#include "util/device.h"
#include "util/error.h"

#include <unistd.h>

#include <cstdio>
#include <optional>
#include <filesystem>

namespace fm {

torch::Tensor sample_noise(uint64_t seed, int64_t first, int64_t count, const std::vector<int64_t>& shape) {
  constexpr int64_t kChunk = 256;
  std::vector<torch::Tensor> parts;
  for (int64_t c = first / kChunk; c * kChunk < first + count; ++c) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(c));
    std::vector<int64_t> shp = shape;
    shp.insert(shp.begin(), kChunk);
    auto chunk = torch::randn(shp, gen);
    int64_t lo = std::max(first, c * kChunk) - c * kChunk, hi = std::min(first + count, (c + 1) * kChunk) - c * kChunk;
    parts.push_back(chunk.narrow(0, lo, hi - lo));
  }
  return torch::cat(parts);
}

namespace {

// Labels for samples [first, first + count): a fixed class, every class in turn, or none (the null label).
torch::Tensor sample_labels(const std::string& classes, int64_t num_classes, int64_t first, int64_t count) {
  if (classes.empty()) return {};
  if (num_classes == 0) throw InputError("--class/--classes: the checkpoint's model is not class-conditional");
  auto idx = torch::arange(first, first + count, torch::kLong);
  if (classes == "all") return idx % num_classes;
  int64_t k = -1;
  try {
    size_t used = 0;
    k = std::stoll(classes, &used);
    if (used != classes.size()) k = -1;
  } catch (const std::logic_error&) {
  }
  if (k < 0 || k >= num_classes)
    throw InputError("--class: expected a class index in [0, " + std::to_string(num_classes) + ") or 'all', got '" +
                     classes + "'");
  return torch::full({count}, k, torch::kLong);
}

std::string shard_path(const std::string& dir, int64_t first, int64_t count) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "/shard_%09lld_%06lld.npz", static_cast<long long>(first), static_cast<long long>(count));
  return dir + buf;
}

}  // namespace

SampleSummary run_sampling(const SampleOptions& o) {
  const auto device = resolve_device(o.device);
  configure_backend(device);
  CheckpointReader ck(o.checkpoint, device);
  const auto& cfg = ck.config();
  auto model = make_velocity_field(cfg.model, cfg.path, ck.sample_shape());
  model->to(device);
  ck.load_module(o.weights == "raw" ? "model" : "ema", *model);
  const bool toy = ck.sample_shape().size() == 1;
  if (toy && !o.png_dir.empty()) throw InputError("--png-dir: only for image models");
  sample_labels(o.classes, model->num_classes(), 0, 1);  // validate before any work
  // Shards are written as batches finish, so an interrupted run of 50,000 samples loses at most one batch.
  const std::string shard_dir = o.out_dir + "/shards";
  make_dirs(shard_dir);
  if (!o.png_dir.empty()) make_dirs(o.png_dir);
  if (!o.resume && std::filesystem::directory_iterator(shard_dir) != std::filesystem::directory_iterator())
    throw InputError(shard_dir + ": holds shards of an earlier run; pass --resume to continue it or choose another --out");

  SampleSummary sum;
  std::vector<torch::Tensor> outs, labels_out;
  int64_t batches_run = 0;
  Progress progress("sample", o.n, 0, 1);
  for (int64_t first = 0; first < o.n; first += o.batch) {
    int64_t count = std::min(o.batch, o.n - first);
    auto labels = sample_labels(o.classes, model->num_classes(), first, count);
    std::string shard = shard_path(shard_dir, first, count);
    torch::Tensor x;
    if (o.resume && std::filesystem::exists(shard)) {
      x = read_npz(shard, {"arr_0"}).at("arr_0");
    } else {
      auto x0 = sample_noise(o.seed, first, count, ck.sample_shape()).to(device);
      std::optional<StraightnessMeter> meter;
      if (o.straightness) meter.emplace(x0);
      auto r = generate(*model, x0, labels.defined() ? labels.to(device) : labels, o.solve, o.cfg_scale,
                        meter ? StepCallback([&](double t, const torch::Tensor& xt) { meter->step(t, xt); }) : nullptr);
      if (meter) sum.straightness += meter->finish(r.x).sum().item<double>();
      sum.mean_nfe += static_cast<double>(r.nfe);
      sum.max_nfe = std::max(sum.max_nfe, static_cast<double>(r.nfe));
      ++batches_run;
      x = toy ? r.x.to(torch::kCPU, torch::kFloat32) : to_uint8(r.x).permute({0, 2, 3, 1}).contiguous().cpu();
      write_npz(shard, {{"arr_0", x}});
      progress.update(first + count, "nfe " + std::to_string(r.nfe));
    }
    for (int64_t i = 0; !o.png_dir.empty() && i < count; ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "/%06lld.png", static_cast<long long>(first + i));
      write_png(o.png_dir + name, x[i]);
    }
    outs.push_back(x);
    if (labels.defined()) labels_out.push_back(labels);
  }
  sum.mean_nfe /= std::max<int64_t>(1, batches_run);
  if (o.straightness && batches_run > 0) sum.straightness /= static_cast<double>(std::min(o.n, batches_run * o.batch));
  auto all = torch::cat(outs);
  sum.n = all.size(0);
  sum.npz = o.out_dir + "/samples.npz";
  std::vector<std::pair<std::string, torch::Tensor>> arrays{{"arr_0", all}};
  if (!labels_out.empty()) arrays.emplace_back("arr_1", torch::cat(labels_out));  // as the ADM evaluator reads
  write_npz(sum.npz, arrays);
  for (int64_t first = 0; first < o.n; first += o.batch) std::remove(shard_path(shard_dir, first, std::min(o.batch, o.n - first)).c_str());
  ::rmdir(shard_dir.c_str());
  sum.png = o.out_dir + "/samples.png";
  if (toy) {
    write_png(sum.png, scatter_panels({all}, kToyPlotLimit));
  } else {
    int64_t shown = std::min<int64_t>(all.size(0), 100);
    write_png(sum.png, make_grid(all.narrow(0, 0, shown), 10));
  }
  return sum;
}

}  // namespace fm
