#include "sample/sample_run.h"

#include <spdlog/spdlog.h>

#include "data/toy2d.h"
#include "io/file_util.h"
#include "io/image.h"
#include "io/npy.h"
#include "sample/figures.h"
#include "train/checkpoint.h"
#include "train/progress.h"
#include "util/device.h"
#include "util/error.h"

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

SampleSummary run_sampling(const SampleOptions& o) {
  const auto device = resolve_device(o.device);
  configure_backend(device);
  CheckpointReader ck(o.checkpoint, device);
  const auto& cfg = ck.config();
  auto model = make_velocity_field(cfg.model, ck.sample_shape());
  model->to(device);
  ck.load_module(o.weights == "raw" ? "model" : "ema", *model);
  make_dirs(o.out_dir);
  const bool toy = ck.sample_shape().size() == 1;

  SampleSummary sum;
  std::vector<torch::Tensor> outs;
  Progress progress("sample", o.n, 0, 1);
  for (int64_t first = 0; first < o.n; first += o.batch) {
    int64_t count = std::min(o.batch, o.n - first);
    auto x0 = sample_noise(o.seed, first, count, ck.sample_shape()).to(device);
    auto r = generate(*model, x0, {}, o.solve);
    sum.mean_nfe += static_cast<double>(r.nfe);
    sum.max_nfe = std::max(sum.max_nfe, static_cast<double>(r.nfe));
    outs.push_back(toy ? r.x.to(torch::kCPU, torch::kFloat32) : to_uint8(r.x).permute({0, 2, 3, 1}).cpu());
    progress.update(first + count, "nfe " + std::to_string(r.nfe));
  }
  int64_t batches = static_cast<int64_t>(outs.size());
  sum.mean_nfe /= std::max<int64_t>(1, batches);
  auto all = torch::cat(outs);
  sum.n = all.size(0);
  sum.npz = o.out_dir + "/samples.npz";
  write_npz(sum.npz, {{"arr_0", all}});
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
