#include "sample/reflow_run.h"

#include <chrono>
#include <filesystem>
#include <fstream>

#include <spdlog/spdlog.h>

#include "data/dataset.h"
#include "data/toy2d.h"
#include "dist/output_lock.h"
#include "dist/rank_runner.h"
#include "io/file_util.h"
#include "io/npy.h"
#include "io/provenance.h"
#include "util/device.h"
#include "util/error.h"
#include "util/preemption.h"

namespace fm {
namespace fs = std::filesystem;

void check_reflow_out(const ReflowOptions& o) {
  if (o.n < 1) throw InputError("--num-pairs: must be >= 1");
  check_generation_out(o, {"pairs.npz", "pairs.json"}, "an earlier fm reflow", "a finished run of these settings");
}

namespace {

std::string reflow_option_of(const std::string& key) { return key == "n" ? "--num-pairs" : generation_option_of(key); }

}  // namespace

ReflowSummary run_reflow(const ReflowOptions& o, dist::World* world) {
  dist::World& w = world ? *world : dist::this_process_only();
  const auto wall_t0 = std::chrono::steady_clock::now();
  install_stop_handlers();
  check_reflow_out(o);
  const auto lock = dist::lock_output_dir(w, o.out_dir, "--out");
  dist::ShardDir shards(o.out_dir + "/shards");
  ReflowSummary sum;
  sum.npz = o.out_dir + "/pairs.npz";
  sum.json = o.out_dir + "/pairs.json";

  const auto device = resolve_device(o.device);
  configure_backend(device);
  GenerationRun gen(o, device);
  const auto& shape = gen.shape();
  const bool labelled = gen.labels(0, 1).defined();
  const nlohmann::json settings = gen.settings();
  if (o.resume && !shards.has_shards() && read_finished_run(sum, {}, settings, reflow_option_of, "fm reflow")) {
    spdlog::info("{} holds the finished pairs of these settings; nothing to do", o.out_dir);
    return sum;
  }
  shards.prepare(o.resume, settings, {"checkpoint", "class_name"}, reflow_option_of, w);
  gen.load_network();

  // Each batch's noise and samples (float32, on the CPU), its labels when the model is conditioned, and its NFE.
  std::vector<int64_t> empty_shape{0};
  empty_shape.insert(empty_shape.end(), shape.begin(), shape.end());
  auto body = [&](const ItemRange& b) -> dist::NamedTensors {
    if (b.empty()) {
      dist::NamedTensors none{{"x0", torch::empty(empty_shape, torch::kFloat32)},
                              {"x1", torch::empty(empty_shape, torch::kFloat32)},
                              {"nfe", torch::empty({0}, torch::kLong)}};
      if (labelled) none.emplace_back("labels", torch::empty({0}, torch::kLong));
      return none;
    }
    const auto x0 = gen.noise(b);
    const auto s = gen.solve_items(b, x0);
    dist::NamedTensors out{{"x0", x0.to(torch::kCPU, torch::kFloat32)},
                           {"x1", s.r.x.to(torch::kCPU, torch::kFloat32)},
                           {"nfe", torch::tensor({s.r.nfe}, torch::kLong)}};
    if (labelled) out.emplace_back("labels", s.labels.to(torch::kCPU));
    return out;
  };
  std::vector<torch::Tensor> x0s, x1s, labels;
  NfeTally nfe;
  auto sink = [&](const ItemRange&, const std::vector<torch::Tensor>& g) {
    nfe.add(g[2]);
    if (!w.is_main()) return std::string();
    x0s.push_back(g[0]);
    x1s.push_back(g[1]);
    if (labelled) labels.push_back(g[3]);
    return "nfe " + std::to_string(g[2][0].item<int64_t>());
  };
  dist::RunOverRanks run;
  run.n = o.n;
  run.batch = o.batch;
  run.outputs = {"x0", "x1", "nfe"};
  if (labelled) run.outputs.push_back("labels");
  run.label = "reflow";
  run.shards = &shards;
  run.on_stop = "the shards in " + shards.dir() + " stay, continue with --resume";
  dist::run_over_ranks(w, run, body, sink);

  sum.n = o.n;
  sum.mean_nfe = nfe.mean();
  sum.max_nfe = nfe.max;
  if (!w.is_main()) return sum;
  std::vector<std::pair<std::string, torch::Tensor>> arrays{{"x0", torch::cat(x0s)}, {"x1", torch::cat(x1s)}};
  x0s.clear();
  x1s.clear();
  if (labelled) arrays.emplace_back("labels", torch::cat(labels));
  write_npz(sum.npz, arrays);
  sum.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_t0).count();
  sum.record = settings;
  const DataConfig& trained = gen.checkpoint().config().data;  // what the flow was trained on
  sum.record["data"] = trained.format == DataFormat::toy ? std::string("toy:") + name_of(parse_toy(trained.path))
                                                         : data_spec(trained);
  sum.record["sample_shape"] = shape;
  sum.record["mean_nfe"] = sum.mean_nfe;
  sum.record["max_nfe"] = sum.max_nfe;
  sum.record["wall_s"] = sum.wall_s;  // this invocation's, resumed batches excluded
  record_software(sum.record, device);
  write_file_atomic(sum.json, sum.record.dump(2) + "\n");
  shards.remove();
  return sum;
}

}  // namespace fm
