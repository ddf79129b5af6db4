#include "sample/sample_run.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <spdlog/spdlog.h>

#include "data/dataset.h"
#include "data/toy2d.h"
#include "dist/output_lock.h"
#include "dist/rank_runner.h"
#include "io/file_util.h"
#include "io/image.h"
#include "io/npy.h"
#include "io/provenance.h"
#include "sample/figures.h"
#include "sample/straightness.h"
#include "sample/toy_metrics.h"
#include "util/device.h"
#include "util/error.h"
#include "util/preemption.h"

namespace fm {
namespace fs = std::filesystem;

namespace {

std::string sample_option_of(const std::string& key) { return key == "n" ? "--num-samples" : generation_option_of(key); }

// samples.npz (arr_0, and arr_1 the labels as the ADM evaluator reads them) and samples.png.
void write_samples(const SampleSummary& sum, const torch::Tensor& all, const torch::Tensor& labels, bool toy,
                   int64_t grid_n, int64_t cycled_classes) {
  std::vector<std::pair<std::string, torch::Tensor>> arrays{{"arr_0", all}};
  if (labels.defined()) arrays.emplace_back("arr_1", labels);
  write_npz(sum.npz, arrays);
  if (toy) {
    write_png(sum.png, scatter_panels({all}, kToyPlotLimit));
  } else {
    const int64_t shown = std::min(all.size(0), grid_n);
    write_png(sum.png, make_grid(all.narrow(0, 0, shown), grid_columns(shown, cycled_classes)));
  }
}

// The toy distribution 2-D samples are measured against: --toy-reference, else the checkpoint's data if a toy.
std::optional<ToyData> toy_reference(const SampleOptions& o, const Config& trained) {
  if (!o.toy_reference.empty()) {
    const auto spec = parse_data_spec(o.toy_reference);
    if (spec.format != DataFormat::toy)
      throw InputError("--toy-reference: expected toy:NAME, got '" + o.toy_reference + "'");
    return parse_toy(spec.path);
  }
  if (trained.data.format == DataFormat::toy) return parse_toy(trained.data.path);
  return std::nullopt;
}

}  // namespace

void check_sample_out(const SampleOptions& o) {
  if (o.n < 1) throw InputError("--num-samples: must be >= 1");
  if (o.grid_n < 1) throw InputError("--grid-n: must be >= 1");
  check_generation_out(o, {"samples.npz", "samples.png", "samples.json"},
                       "an earlier run (of fm sample, or of fm train in a run directory)",
                       "a finished fm sample run of these settings");
}

SampleSummary run_sampling(const SampleOptions& o, dist::World* world) {
  dist::World& w = world ? *world : dist::this_process_only();
  const auto wall_t0 = std::chrono::steady_clock::now();
  install_stop_handlers();
  // The output directory's state is checked before the checkpoint is read: a run never starts only to find it
  // would overwrite an earlier one.
  check_sample_out(o);
  const auto lock = dist::lock_output_dir(w, o.out_dir, "--out");
  dist::ShardDir shards(o.out_dir + "/shards");
  SampleSummary sum;
  sum.npz = o.out_dir + "/samples.npz";
  sum.png = o.out_dir + "/samples.png";
  sum.json = o.out_dir + "/samples.json";
  if (!o.png_dir.empty() && w.is_main()) make_dirs(o.png_dir);

  const auto device = resolve_device(o.device);
  configure_backend(device);
  GenerationRun gen(o, device);
  const auto& shape = gen.shape();
  const bool toy = shape.size() == 1;
  if (toy && !o.png_dir.empty()) throw InputError("--png-dir: only for image models");
  const auto reference = toy ? toy_reference(o, gen.checkpoint().config()) : std::nullopt;
  nlohmann::json settings = gen.settings();
  settings["straightness"] = o.straightness;
  if (o.resume && !shards.has_shards() && read_finished_run(sum, {sum.png}, settings, sample_option_of, "fm sample")) {
    sum.straightness = sum.record.value("mean_straightness", 0.0);
    sum.toy_metrics = sum.record.value("toy_metrics", nlohmann::json());
    spdlog::info("{} holds the finished samples of these settings; nothing to do", o.out_dir);
    return sum;
  }
  shards.prepare(o.resume, settings, {"checkpoint", "class_name"}, sample_option_of, w);
  gen.load_network();

  // Each batch's samples (uint8 NHWC images or float 2-D points), its NFE and, when asked, its straightness summed
  // over its samples; over several ranks rank 0 gathers every round's samples in order.
  auto body = [&](const ItemRange& b) -> dist::NamedTensors {
    if (b.empty())
      return {{"arr_0", toy ? torch::empty({0, shape[0]}, torch::kFloat32)
                            : torch::empty({0, shape[1], shape[2], shape[0]}, torch::kUInt8)},
              {"nfe", torch::empty({0}, torch::kLong)},
              {"straightness", torch::empty({0}, torch::kFloat64)}};
    const auto x0 = gen.noise(b);
    std::optional<StraightnessMeter> meter;
    if (o.straightness) meter.emplace(x0);
    const auto r = gen.solve_items(b, x0, meter ? StepCallback([&](double t, const torch::Tensor& xt) {
                                     meter->step(t, xt);
                                   })
                                                : nullptr)
                       .r;
    auto x = toy ? r.x.to(torch::kCPU, torch::kFloat32) : to_uint8(r.x).permute({0, 2, 3, 1}).contiguous().cpu();
    return {{"arr_0", x},
            {"nfe", torch::tensor({r.nfe}, torch::kLong)},
            {"straightness", meter ? meter->finish(r.x).sum().to(torch::kCPU).reshape({1})
                                   : torch::empty({0}, torch::kFloat64)}};
  };
  std::vector<torch::Tensor> outs;
  NfeTally nfe;
  double straightness_sum = 0;
  auto sink = [&](const ItemRange& done, const std::vector<torch::Tensor>& g) {
    nfe.add(g[1]);
    // Per batch and added in batch order, so that the mean has the bits of one process.
    for (int64_t i = 0; i < g[2].size(0); ++i) straightness_sum += g[2][i].item<double>();
    if (!w.is_main()) return std::string();
    for (int64_t i = 0; !o.png_dir.empty() && i < done.count; ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "/%06lld.png", static_cast<long long>(done.first + i));
      write_png(o.png_dir + name, g[0][i]);
    }
    outs.push_back(g[0]);
    return "nfe " + std::to_string(g[1][0].item<int64_t>());
  };
  dist::RunOverRanks run;
  run.n = o.n;
  run.batch = o.batch;
  run.outputs = {"arr_0", "nfe", "straightness"};
  run.label = "sample";
  run.shards = &shards;
  run.on_stop = "the shards in " + shards.dir() + " stay, continue with --resume";
  dist::run_over_ranks(w, run, body, sink);

  sum.n = o.n;
  sum.mean_nfe = nfe.mean();
  sum.max_nfe = nfe.max;
  sum.straightness = straightness_sum / static_cast<double>(o.n);
  if (!w.is_main()) return sum;  // rank 0 writes the outputs
  const auto all = torch::cat(outs);
  write_samples(sum, all, gen.labels(0, o.n), toy, o.grid_n, gen.cycled_classes());
  sum.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_t0).count();
  sum.record = settings;
  sum.record["mean_nfe"] = sum.mean_nfe;
  sum.record["max_nfe"] = sum.max_nfe;
  if (o.straightness) sum.record["mean_straightness"] = sum.straightness;
  if (reference) {
    sum.toy_metrics = toy_metrics(all, *reference, o.n, o.seed);
    sum.record["toy_metrics"] = sum.toy_metrics;
  }
  sum.record["wall_s"] = sum.wall_s;  // this invocation's, resumed batches excluded
  record_software(sum.record, device);
  write_file_atomic(sum.json, sum.record.dump(2) + "\n");
  shards.remove();
  return sum;
}

}  // namespace fm
