#include "sample/sample_run.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <spdlog/spdlog.h>

#include "checkpoint/network.h"
#include "data/toy2d.h"
#include "dist/output_lock.h"
#include "dist/rank_runner.h"
#include "io/file_util.h"
#include "io/image.h"
#include "io/npy.h"
#include "io/provenance.h"
#include "sample/figures.h"
#include "sample/straightness.h"
#include "util/device.h"
#include "util/error.h"
#include "util/per_item_draw.h"
#include "util/preemption.h"

namespace fm {
namespace fs = std::filesystem;

torch::Tensor sample_noise(uint64_t seed, int64_t first, int64_t count, const std::vector<int64_t>& shape) {
  return per_item_draw(seed, /*stream=*/0, first, count, shape,
                       [](const std::vector<int64_t>& s, at::Generator& g) { return torch::randn(s, g); });
}

SolveSettings resolve_solve(const SampleConfig& from_checkpoint, const SolveOverrides& given) {
  SolveSettings s = solve_settings(from_checkpoint);
  if (given.solver) s.solver = *given.solver;
  if (given.steps) s.steps = *given.steps;
  if (given.time_grid) s.time_grid = *given.time_grid;
  if (given.atol) s.atol = *given.atol;
  if (given.rtol) s.rtol = *given.rtol;
  if (given.cuda_graph) s.cuda_graph = true;
  if (!is_fixed_step(s.solver)) {
    if (given.steps || given.time_grid)
      spdlog::warn("--steps and --time-grid do nothing with dopri5, which chooses its own steps (--atol, --rtol)");
  } else if (given.atol || given.rtol) {
    spdlog::warn("--atol and --rtol do nothing with the fixed-step solver {} (they tune dopri5)", name_of(s.solver));
  }
  return s;
}

namespace {

// Which labels a run samples with: none (the null label), every class in turn, or one class.
struct ClassChoice {
  enum Kind { kNone, kAll, kOne } kind = kNone;
  int64_t index = -1;
};

ClassChoice parse_classes(const std::string& arg, int64_t num_classes, const std::vector<std::string>& names) {
  ClassChoice c;
  if (arg.empty()) return c;
  if (num_classes == 0) throw InputError("--class/--classes: the checkpoint's model is not class-conditional");
  if (arg == "all") {
    c.kind = ClassChoice::kAll;
    return c;
  }
  c.kind = ClassChoice::kOne;
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == arg) c.index = static_cast<int64_t>(i);
  if (c.index < 0) {
    try {
      size_t used = 0;
      int64_t k = std::stoll(arg, &used);
      if (used == arg.size()) c.index = k;
    } catch (const std::logic_error&) {
    }
  }
  if (c.index < 0 || c.index >= num_classes) {
    std::string known;
    for (size_t i = 0; i < names.size() && i < 20; ++i) known += (i ? ", " : "") + names[i];
    throw InputError("--class: expected a class index in [0, " + std::to_string(num_classes) + ")" +
                     (known.empty() ? "" : ", a class name (" + known + ")") + " or 'all', got '" + arg + "'");
  }
  return c;
}

// Labels for samples [first, first + count).
torch::Tensor sample_labels(const ClassChoice& c, int64_t num_classes, int64_t first, int64_t count) {
  if (c.kind == ClassChoice::kNone) return {};
  if (c.kind == ClassChoice::kAll) return torch::arange(first, first + count, torch::kLong) % num_classes;
  return torch::full({count}, c.index, torch::kLong);
}

// Without a class the samples come from the null label, and guidance mixes its velocity in: a model trained without
// label dropout never trained that label, and its samples would be noise that looks like a result.
void check_null_label(const SampleOptions& o, const Conditioning& cond, const ClassChoice& cls) {
  if (cond.num_classes > 0 && !cond.null_label_trained()) {
    if (cls.kind == ClassChoice::kNone)
      throw InputError(o.checkpoint + ": trained with model.unet.class_dropout 0, so its null label (sampling "
                       "without a class) is untrained; pass --class NAME|INDEX or --classes all");
    if (o.cfg_scale != 0.0)
      throw InputError("--cfg-scale: " + o.checkpoint + " was trained with model.unet.class_dropout 0, so guidance "
                       "would mix in its untrained null label; pass --cfg-scale 0");
  }
  if (o.cfg_scale != 0.0 && cls.kind == ClassChoice::kNone)
    spdlog::warn("--cfg-scale {} does nothing without --class or --classes", o.cfg_scale);
}

// The option a stored setting comes from, for the message that refuses a resume.
std::string option_of(const std::string& key) {
  if (key.rfind("checkpoint", 0) == 0) return "--checkpoint";
  if (key == "classes") return "--class/--classes";
  if (key == "cfg_scale") return "--cfg-scale";
  if (key == "time_grid") return "--time-grid";
  if (key == "n") return "--num-samples";
  return "--" + key;
}

// What determines the samples: stored beside the shards (a resume must match it) and in samples.json.
nlohmann::json sample_settings(const SampleOptions& o, const CheckpointReader& ck, const SolveSettings& solve,
                               const ClassChoice& cls) {
  const bool adaptive = !is_fixed_step(solve.solver);
  const auto& names = ck.class_names();
  nlohmann::json s;
  record_file(s, "checkpoint", o.checkpoint);
  s["checkpoint_step"] = ck.step();
  s["weights"] = name_of(o.weights);
  s["seed"] = o.seed;
  s["n"] = o.n;
  s["batch"] = o.batch;
  s["solver"] = name_of(solve.solver);
  s["steps"] = adaptive ? nlohmann::json(nullptr) : nlohmann::json(solve.steps);
  s["time_grid"] = adaptive ? nlohmann::json(nullptr) : nlohmann::json(name_of(solve.time_grid));
  s["atol"] = adaptive ? nlohmann::json(solve.atol) : nlohmann::json(nullptr);
  s["rtol"] = adaptive ? nlohmann::json(solve.rtol) : nlohmann::json(nullptr);
  s["classes"] = cls.kind == ClassChoice::kNone  ? nlohmann::json(nullptr)
                 : cls.kind == ClassChoice::kAll ? nlohmann::json("all")
                                                 : nlohmann::json(cls.index);
  s["class_name"] = cls.kind == ClassChoice::kOne && cls.index < static_cast<int64_t>(names.size())
                        ? nlohmann::json(names[cls.index])
                        : nlohmann::json(nullptr);
  s["cfg_scale"] = o.cfg_scale;
  s["straightness"] = o.straightness;
  return s;
}

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

}  // namespace

void check_sample_out(const SampleOptions& o) {
  if (o.n < 1) throw InputError("--num-samples: must be >= 1");
  if (o.batch < 1) throw InputError("--batch: must be >= 1");
  if (o.grid_n < 1) throw InputError("--grid-n: must be >= 1");
  prepare_output_dir(o.out_dir, "--out");
  dist::ShardDir(o.out_dir + "/shards").check_usable(o.resume, o.overwrite);
  for (const char* name : {"samples.npz", "samples.png", "samples.json"})
    if (fs::exists(o.out_dir + "/" + name) && !o.overwrite && !o.resume)
      throw InputError("--out " + o.out_dir + ": holds the " + name + " of an earlier run (of fm sample, or of fm train "
                       "in a run directory); pass --resume to keep a finished fm sample run of these settings, "
                       "--overwrite to replace it, or choose another --out");
}

namespace {

// The summary of a finished run whose samples.json records these settings (nullopt when there is none to reuse).
std::optional<SampleSummary> finished_run(const SampleSummary& paths, const nlohmann::json& settings) {
  const bool npz = fs::exists(paths.npz), json = fs::exists(paths.json);
  if (!npz && !json && !fs::exists(paths.png)) return std::nullopt;
  if (!npz || !json)
    throw InputError(std::filesystem::path(paths.npz).parent_path().string() + ": holds " +
                     (npz ? "samples.npz without samples.json" : json ? "samples.json without samples.npz"
                                                                      : "samples.png without samples.npz") +
                     ", not a finished fm sample run whose settings can be checked; pass --overwrite to replace it or "
                     "choose another --out");
  nlohmann::json record;
  try {
    std::ifstream(paths.json) >> record;
  } catch (const nlohmann::json::exception&) {
    throw file_error(paths.json, "not valid JSON; start afresh with --overwrite");
  }
  dist::check_same_settings(record, settings, {"checkpoint", "class_name"}, option_of, paths.json);
  SampleSummary s = paths;
  s.n = record.at("n").get<int64_t>();
  s.mean_nfe = record.at("mean_nfe").get<double>();
  s.max_nfe = record.at("max_nfe").get<double>();
  s.straightness = record.value("mean_straightness", 0.0);
  s.record = record;
  return s;
}

}  // namespace

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
  CheckpointReader ck(o.checkpoint, device);
  const auto& shape = ck.sample_shape();
  const bool toy = shape.size() == 1;
  if (toy && !o.png_dir.empty()) throw InputError("--png-dir: only for image models");
  const Conditioning cond = conditioning_of(ck.config().model);
  const auto& names = ck.class_names();
  const ClassChoice cls = parse_classes(o.classes, cond.num_classes, names);
  check_null_label(o, cond, cls);
  if (cls.kind == ClassChoice::kOne)
    spdlog::info("class {}{}", cls.index,
                 cls.index < static_cast<int64_t>(names.size()) ? " (" + names[cls.index] + ")" : std::string());
  const SolveSettings solve = resolve_solve(ck.config().sample, o.solve);
  spdlog::info("solver {}: {}", name_of(solve.solver),
               !is_fixed_step(solve.solver)
                   ? fmt::format("atol {:g}, rtol {:g}", solve.atol, solve.rtol)
                   : fmt::format("{} steps, {} time grid", solve.steps, name_of(solve.time_grid)));
  const nlohmann::json settings = sample_settings(o, ck, solve, cls);
  if (o.resume && !shards.has_shards())
    if (auto done = finished_run(sum, settings)) {
      spdlog::info("{} holds the finished samples of these settings; nothing to do", o.out_dir);
      return *done;
    }
  shards.prepare(o.resume, settings, {"checkpoint", "class_name"}, option_of, w);
  auto model = load_network(ck, o.weights, device);

  // Each batch's samples (uint8 NHWC images or float 2-D points), its NFE and, when asked, its straightness summed
  // over its samples; over several ranks rank 0 gathers every round's samples in order.
  auto body = [&](const ItemRange& b) -> dist::NamedTensors {
    if (b.empty())
      return {{"arr_0", toy ? torch::empty({0, shape[0]}, torch::kFloat32)
                            : torch::empty({0, shape[1], shape[2], shape[0]}, torch::kUInt8)},
              {"nfe", torch::empty({0}, torch::kLong)},
              {"straightness", torch::empty({0}, torch::kFloat64)}};
    auto labels = sample_labels(cls, cond.num_classes, b.first, b.count);
    auto x0 = sample_noise(o.seed, b.first, b.count, shape).to(device);
    std::optional<StraightnessMeter> meter;
    if (o.straightness) meter.emplace(x0);
    auto r = generate(*model, x0, labels.defined() ? labels.to(device) : labels, solve, o.cfg_scale,
                      meter ? StepCallback([&](double t, const torch::Tensor& xt) { meter->step(t, xt); }) : nullptr);
    auto x = toy ? r.x.to(torch::kCPU, torch::kFloat32) : to_uint8(r.x).permute({0, 2, 3, 1}).contiguous().cpu();
    return {{"arr_0", x},
            {"nfe", torch::tensor({r.nfe}, torch::kLong)},
            {"straightness", meter ? meter->finish(r.x).sum().to(torch::kCPU).reshape({1})
                                   : torch::empty({0}, torch::kFloat64)}};
  };
  std::vector<torch::Tensor> outs;
  double nfe_sum = 0, straightness_sum = 0;
  int64_t batches = 0;
  auto sink = [&](const ItemRange& done, const std::vector<torch::Tensor>& g) {
    for (int64_t i = 0; i < g[1].size(0); ++i) {
      const auto v = static_cast<double>(g[1][i].item<int64_t>());
      nfe_sum += v;
      sum.max_nfe = std::max(sum.max_nfe, v);
      ++batches;
    }
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
  sum.mean_nfe = nfe_sum / static_cast<double>(std::max<int64_t>(1, batches));
  sum.straightness = straightness_sum / static_cast<double>(o.n);
  if (!w.is_main()) return sum;  // rank 0 writes the outputs
  write_samples(sum, torch::cat(outs), sample_labels(cls, cond.num_classes, 0, o.n), toy, o.grid_n,
                cls.kind == ClassChoice::kAll ? cond.num_classes : 0);
  sum.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_t0).count();
  sum.record = settings;
  sum.record["mean_nfe"] = sum.mean_nfe;
  sum.record["max_nfe"] = sum.max_nfe;
  if (o.straightness) sum.record["mean_straightness"] = sum.straightness;
  sum.record["wall_s"] = sum.wall_s;  // this invocation's, resumed batches excluded
  record_software(sum.record, device);
  write_file_atomic(sum.json, sum.record.dump(2) + "\n");
  shards.remove();
  return sum;
}

}  // namespace fm
