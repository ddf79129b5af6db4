#include "sample/sample_run.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <spdlog/spdlog.h>

#include "checkpoint/checkpoint.h"
#include "data/toy2d.h"
#include "io/file_util.h"
#include "io/image.h"
#include "io/npy.h"
#include "nn/memory_format.h"
#include "sample/figures.h"
#include "sample/straightness.h"
#include "util/device.h"
#include "util/error.h"
#include "util/preemption.h"
#include "util/progress.h"
#include "util/rank_batches.h"

#include <optional>

namespace fm {
namespace fs = std::filesystem;

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

SolveSettings resolve_solve(const SampleConfig& from_checkpoint, const SolveOverrides& given) {
  SolveSettings s = solve_settings(from_checkpoint);
  if (given.solver) s.solver = *given.solver;
  if (given.steps) s.steps = *given.steps;
  if (given.time_grid) s.time_grid = *given.time_grid;
  if (given.atol) s.atol = *given.atol;
  if (given.rtol) s.rtol = *given.rtol;
  if (given.cuda_graph) s.cuda_graph = true;
  if (s.solver == "dopri5") {
    if (given.steps || given.time_grid)
      spdlog::warn("--steps and --time-grid do nothing with dopri5, which chooses its own steps (--atol, --rtol)");
  } else if (given.atol || given.rtol) {
    spdlog::warn("--atol and --rtol do nothing with the fixed-step solver {} (they tune dopri5)", s.solver);
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

std::string shard_path(const std::string& dir, int64_t first, int64_t count) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "/shard_%09lld_%06lld.npz", static_cast<long long>(first), static_cast<long long>(count));
  return dir + buf;
}

bool is_shard_file(const fs::path& p) {
  const auto name = p.filename().string();
  return name == "settings.json" || (name.rfind("shard_", 0) == 0 && p.extension() == ".npz");
}

// Finished batches only: a settings.json without shards (a run that failed before its first batch) holds no work.
bool has_shards(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return false;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (is_shard_file(e.path()) && e.path().filename() != "settings.json") return true;
  return false;
}

void remove_shards(const std::string& dir) {
  std::error_code ec;
  std::vector<fs::path> doomed;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (is_shard_file(e.path())) doomed.push_back(e.path());
  for (const auto& p : doomed) std::remove(p.c_str());
}

// The option a stored setting comes from, for the message that refuses a resume.
const char* option_of(const std::string& key) {
  if (key.rfind("checkpoint", 0) == 0) return "--checkpoint";
  if (key == "classes") return "--class/--classes";
  if (key == "cfg_scale") return "--cfg-scale";
  if (key == "time_grid") return "--time-grid";
  if (key == "n") return "--num-samples";
  static thread_local std::string opt;
  opt = "--" + key;
  return opt.c_str();
}

// A resume must continue the run its shards came from: every stored setting but the checkpoint's path (a moved file
// with the same bytes is the same model) and the class's name must match.
void check_resume(const std::string& settings_file, const nlohmann::json& now) {
  std::ifstream f(settings_file);
  if (!f)
    throw InputError(settings_file + ": missing, so the settings of the shards beside it cannot be checked; start "
                     "afresh with --overwrite");
  nlohmann::json before;
  try {
    f >> before;
  } catch (const nlohmann::json::exception&) {
    throw file_error(settings_file, "not valid JSON; start afresh with --overwrite");
  }
  for (const auto& [key, value] : now.items()) {
    if (key == "checkpoint" || key == "class_name") continue;
    if (!before.contains(key) || before[key] != value)
      throw InputError(std::string(option_of(key)) + ": --resume continues a run started with " + key + " = " +
                       (before.contains(key) ? before[key].dump() : "(not recorded)") + ", this one has " +
                       value.dump() + " (" + settings_file + "); resume with the same settings or start afresh with "
                       "--overwrite");
  }
}

}  // namespace

SampleSummary run_sampling(const SampleOptions& o, dist::World* world) {
  dist::World& w = world ? *world : this_process_only();
  const auto wall_t0 = std::chrono::steady_clock::now();
  install_stop_handlers();
  if (o.n < 1) throw InputError("--num-samples: must be >= 1");
  if (o.batch < 1) throw InputError("--batch: must be >= 1");
  if (o.grid_n < 1) throw InputError("--grid-n: must be >= 1");
  if (o.resume && o.overwrite) throw InputError("--resume and --overwrite: choose one");

  // The output directory's state is checked before the checkpoint is read: a run never starts only to find it
  // would overwrite an earlier one.
  const std::string shard_dir = o.out_dir + "/shards", settings_file = shard_dir + "/settings.json";
  SampleSummary sum;
  sum.npz = o.out_dir + "/samples.npz";
  sum.png = o.out_dir + "/samples.png";
  sum.json = o.out_dir + "/samples.json";
  const bool shards = has_shards(shard_dir);
  if (shards && !o.resume && !o.overwrite)
    throw InputError(shard_dir + ": holds shards of an earlier run; pass --resume to continue it, --overwrite to "
                     "start afresh, or choose another --out");
  if (fs::exists(sum.npz) && !o.overwrite && !(o.resume && shards))
    throw InputError(o.out_dir + ": holds samples.npz of an earlier run; pass --overwrite to replace it or choose "
                     "another --out");
  make_dirs(shard_dir);
  if (::access(shard_dir.c_str(), W_OK) != 0) throw InputError("--out " + o.out_dir + ": not writable");
  if (!o.png_dir.empty() && w.is_main()) make_dirs(o.png_dir);

  const auto device = resolve_device(o.device);
  configure_backend(device);
  CheckpointReader ck(o.checkpoint, device);
  const auto& cfg = ck.config();
  const bool toy = ck.sample_shape().size() == 1;
  if (toy && !o.png_dir.empty()) throw InputError("--png-dir: only for image models");
  const int64_t num_classes = cfg.model.type == "unet" ? cfg.model.unet.num_classes : 0;
  const auto& names = ck.class_names();
  const ClassChoice cls = parse_classes(o.classes, num_classes, names);
  // Issue 10, bug 7: with class_dropout 0 the null label never saw training, so unconditional samples and guidance
  // (which mixes in the null label's velocity) would be noise that looks like a result.
  if (num_classes > 0 && cfg.model.unet.class_dropout == 0) {
    if (cls.kind == ClassChoice::kNone)
      throw InputError(o.checkpoint + ": trained with model.unet.class_dropout 0, so its null label (sampling "
                       "without a class) is untrained; pass --class NAME|INDEX or --classes all");
    if (o.cfg_scale != 0.0)
      throw InputError("--cfg-scale: " + o.checkpoint + " was trained with model.unet.class_dropout 0, so guidance "
                       "would mix in its untrained null label; pass --cfg-scale 0");
  }
  if (o.cfg_scale != 0.0 && cls.kind == ClassChoice::kNone)
    spdlog::warn("--cfg-scale {} does nothing without --class or --classes", o.cfg_scale);
  if (cls.kind == ClassChoice::kOne)
    spdlog::info("class {}{}", cls.index,
                 cls.index < static_cast<int64_t>(names.size()) ? " (" + names[cls.index] + ")" : std::string());
  const SolveSettings solve = resolve_solve(cfg.sample, o.solve);
  const bool adaptive = solve.solver == "dopri5";
  spdlog::info("solver {}: {}", solve.solver,
               adaptive ? fmt::format("atol {:g}, rtol {:g}", solve.atol, solve.rtol)
                        : fmt::format("{} steps, {} time grid", solve.steps, solve.time_grid));

  // What determines the samples; stored beside the shards (a resume must match it) and in samples.json.
  nlohmann::json settings = {
      {"checkpoint", o.checkpoint},
      {"checkpoint_step", ck.step()},
      {"checkpoint_bytes", static_cast<int64_t>(fs::file_size(o.checkpoint))},
      {"checkpoint_crc32", file_crc32(o.checkpoint)},
      {"weights", o.weights},
      {"seed", o.seed},
      {"n", o.n},
      {"batch", o.batch},
      {"solver", solve.solver},
      {"steps", adaptive ? nlohmann::json(nullptr) : nlohmann::json(solve.steps)},
      {"time_grid", adaptive ? nlohmann::json(nullptr) : nlohmann::json(solve.time_grid)},
      {"atol", adaptive ? nlohmann::json(solve.atol) : nlohmann::json(nullptr)},
      {"rtol", adaptive ? nlohmann::json(solve.rtol) : nlohmann::json(nullptr)},
      {"classes", cls.kind == ClassChoice::kNone  ? nlohmann::json(nullptr)
                  : cls.kind == ClassChoice::kAll ? nlohmann::json("all")
                                                  : nlohmann::json(cls.index)},
      {"class_name", cls.kind == ClassChoice::kOne && cls.index < static_cast<int64_t>(names.size())
                         ? nlohmann::json(names[cls.index])
                         : nlohmann::json(nullptr)},
      {"cfg_scale", o.cfg_scale}};
  if (o.resume && shards) {
    check_resume(settings_file, settings);
  } else if (w.is_main()) {
    if (shards) remove_shards(shard_dir);  // --overwrite
    write_file_atomic(settings_file, settings.dump(2) + "\n");
  }
  // Every rank has judged the shard directory as it was before any rank writes to it.
  w.barrier();

  auto model = make_velocity_field(cfg.model, cfg.path, ck.sample_shape());
  model->to(device);
  ck.load_module(o.weights == "raw" ? "model" : "ema", *model);
  if (prefers_channels_last(device, ck.sample_shape(), /*training=*/false)) weights_to_channels_last(*model);

  // Shards are written as batches finish, so an interrupted run of 50,000 samples loses at most one batch; each
  // keeps its NFE so that the summary of a resumed run covers every batch. Over several ranks each solves its batches
  // (util/rank_batches.h) into the shared shard directory, and rank 0 gathers every round's samples in order.
  const RankBatches plan(o.n, o.batch, w.rank(), w.size());
  auto on_wire = [&](const torch::Tensor& t) { return w.distributed() ? t.to(device) : t; };
  std::vector<torch::Tensor> outs;
  double nfe_sum = 0, straightness_sum = 0;
  int64_t batches = 0, solved = 0;
  std::optional<Progress> progress;
  if (w.is_main()) progress.emplace("sample", o.n, 0, 1);
  const auto& shape = ck.sample_shape();
  for (int64_t round = 0; round < plan.rounds(); ++round) {
    const ItemRange b = plan.mine(round);
    torch::Tensor x = toy ? torch::empty({0, shape[0]}, torch::kFloat32)
                          : torch::empty({0, shape[1], shape[2], shape[0]}, torch::kUInt8);
    std::vector<double> nfe, straight;  // of this rank's batch of the round, if any
    const std::string shard = shard_path(shard_dir, b.first, b.count);
    if (!b.empty() && o.resume && fs::exists(shard)) {
      auto arrays = read_npz(shard);
      if (!arrays.count("arr_0") || !arrays.count("nfe"))
        throw file_error(shard, "not a shard of fm sample (needs arr_0 and nfe); start afresh with --overwrite");
      x = arrays.at("arr_0");
      nfe.push_back(arrays.at("nfe").item<double>());
    } else if (!b.empty()) {
      auto labels = sample_labels(cls, num_classes, b.first, b.count);
      auto x0 = sample_noise(o.seed, b.first, b.count, shape).to(device);
      std::optional<StraightnessMeter> meter;
      if (o.straightness) meter.emplace(x0);
      auto r = generate(*model, x0, labels.defined() ? labels.to(device) : labels, solve, o.cfg_scale,
                        meter ? StepCallback([&](double t, const torch::Tensor& xt) { meter->step(t, xt); }) : nullptr);
      if (meter) straight.push_back(meter->finish(r.x).sum().item<double>());
      nfe.push_back(static_cast<double>(r.nfe));
      x = toy ? r.x.to(torch::kCPU, torch::kFloat32) : to_uint8(r.x).permute({0, 2, 3, 1}).contiguous().cpu();
      write_npz(shard, {{"arr_0", x}, {"nfe", torch::tensor(r.nfe, torch::kLong)}});
    }
    auto xs = w.all_gather_cat(on_wire(x)).cpu();
    auto nfes = w.all_gather_cat(on_wire(torch::tensor(nfe, torch::kFloat64))).cpu();
    const ItemRange done = plan.round_items(round);
    for (int64_t i = 0; i < nfes.size(0); ++i) {
      const double v = nfes[i].item<double>();
      nfe_sum += v;
      sum.max_nfe = std::max(sum.max_nfe, v);
      ++batches;
    }
    if (o.straightness) {
      // Per batch and added in batch order, so that the mean has the bits of one process; resumed batches have none.
      auto sums = w.all_gather_cat(on_wire(torch::tensor(straight, torch::kFloat64))).cpu();
      auto solved_now = w.all_gather_cat(
          on_wire(torch::tensor(std::vector<int64_t>(straight.size(), b.count), torch::kLong))).cpu();
      for (int64_t i = 0; i < sums.size(0); ++i) {
        straightness_sum += sums[i].item<double>();
        solved += solved_now[i].item<int64_t>();
      }
    }
    if (w.is_main()) {
      for (int64_t i = 0; !o.png_dir.empty() && i < done.count; ++i) {
        char name[32];
        std::snprintf(name, sizeof name, "/%06lld.png", static_cast<long long>(done.first + i));
        write_png(o.png_dir + name, xs[i]);
      }
      outs.push_back(xs);
      progress->update(done.first + done.count, nfe.empty() ? "" : "nfe " + std::to_string(int64_t(nfe[0])));
    }
    // One rank's signal stops every rank after the same round, each with its own shards saved.
    if (w.any(stop_requested()) && round + 1 < plan.rounds()) {
      spdlog::info("stopped after {} of {} samples; the shards in {} stay, continue with --resume",
                   done.first + done.count, o.n, shard_dir);
      // torchrun sends SIGTERM to every worker once one has exited: that must not turn this exit 75 into 143.
      if (w.distributed()) ignore_stop_signals();
      // A rank stopped by another rank's signal reports SIGTERM, what batch schedulers send.
      throw StopRequested{stop_signal() ? stop_signal() : SIGTERM};
    }
  }
  sum.straightness = solved > 0 ? straightness_sum / static_cast<double>(solved) : 0.0;
  sum.mean_nfe = nfe_sum / static_cast<double>(std::max<int64_t>(1, batches));
  if (!w.is_main()) {
    sum.n = o.n;
    return sum;  // rank 0 writes the outputs
  }
  auto all = torch::cat(outs);
  sum.n = all.size(0);
  std::vector<std::pair<std::string, torch::Tensor>> arrays{{"arr_0", all}};
  auto labels = sample_labels(cls, num_classes, 0, o.n);
  if (labels.defined()) arrays.emplace_back("arr_1", labels);  // as the ADM evaluator reads
  write_npz(sum.npz, arrays);
  if (toy) {
    write_png(sum.png, scatter_panels({all}, kToyPlotLimit));
  } else {
    const int64_t shown = std::min(all.size(0), o.grid_n);
    write_png(sum.png, make_grid(all.narrow(0, 0, shown),
                                 grid_columns(shown, cls.kind == ClassChoice::kAll ? num_classes : 0)));
  }
  sum.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_t0).count();
  sum.record = settings;
  sum.record["mean_nfe"] = sum.mean_nfe;
  sum.record["max_nfe"] = sum.max_nfe;
  sum.record["wall_s"] = sum.wall_s;  // this invocation's, resumed batches excluded
  sum.record["device"] = device.str();
  sum.record["fm_version"] = FM_VERSION;
  sum.record["libtorch_version"] = TORCH_VERSION;
  write_file_atomic(sum.json, sum.record.dump(2) + "\n");
  remove_shards(shard_dir);
  ::rmdir(shard_dir.c_str());
  return sum;
}

}  // namespace fm
