#include "sample/generation.h"

#include <filesystem>
#include <fstream>

#include <spdlog/spdlog.h>

#include "checkpoint/network.h"
#include "dist/shard_dir.h"
#include "io/file_util.h"
#include "io/provenance.h"
#include "sample/sde.h"
#include "util/error.h"
#include "util/per_item_draw.h"

namespace fm {

torch::Tensor sample_noise(uint64_t seed, int64_t first, int64_t count, const std::vector<int64_t>& shape,
                           uint64_t stream) {
  return per_item_draw(seed, stream, first, count, shape,
                       [](const std::vector<int64_t>& s, at::Generator& g) { return torch::randn(s, g); });
}

SolveSettings resolve_solve(const SampleConfig& from_checkpoint, const SolveOverrides& given) {
  SolveSettings s = solve_settings(from_checkpoint);
  if (given.solver) s.solver = *given.solver;
  if (given.steps) s.steps = *given.steps;
  if (given.time_grid) s.time_grid = *given.time_grid;
  if (given.atol) s.atol = *given.atol;
  if (given.rtol) s.rtol = *given.rtol;
  if (given.diffusion) s.diffusion = *given.diffusion;
  if (given.diffusion_norm) s.diffusion_norm = *given.diffusion_norm;
  if (given.sde_last_step) s.sde_last_step = *given.sde_last_step;
  if (given.cuda_graph) s.cuda_graph = true;
  if (!is_fixed_step(s.solver)) {
    if (given.steps || given.time_grid)
      spdlog::warn("--steps and --time-grid do nothing with dopri5, which chooses its own steps (--atol, --rtol)");
  } else if (given.atol || given.rtol) {
    spdlog::warn("--atol and --rtol do nothing with the fixed-step solver {} (they tune dopri5)", name_of(s.solver));
  }
  if (s.solver != Solver::euler_maruyama && (given.diffusion || given.diffusion_norm || given.sde_last_step))
    spdlog::warn("--diffusion, --diffusion-norm and --sde-last-step do nothing with the ODE solver {} (they shape "
                 "euler_maruyama's SDE)", name_of(s.solver));
  return s;
}

SolveSettings resolve_solve(const Config& from_checkpoint, const SolveOverrides& given) {
  SolveSettings s = resolve_solve(from_checkpoint.sample, given);
  s.path = make_path(from_checkpoint.path);
  return s;
}

std::string generation_option_of(const std::string& key) {
  if (key.rfind("checkpoint", 0) == 0) return "--checkpoint";
  if (key == "classes") return "--class/--classes";
  if (key == "cfg_scale") return "--cfg-scale";
  if (key == "cfg_interval") return "--cfg-interval";
  if (key == "time_grid") return "--time-grid";
  if (key == "diffusion_norm") return "--diffusion-norm";
  if (key == "sde_last_step") return "--sde-last-step";
  return "--" + key;
}

bool read_finished_run(GenerationSummary& s, const std::vector<std::string>& others, const nlohmann::json& settings,
                       const std::function<std::string(const std::string&)>& option_of, const std::string& command) {
  namespace fs = std::filesystem;
  const bool npz = fs::exists(s.npz), json = fs::exists(s.json);
  if (!npz || !json) {
    std::string present = npz ? s.npz : json ? s.json : "";
    for (const auto& other : others)
      if (present.empty() && fs::exists(other)) present = other;
    if (present.empty()) return false;
    const std::string missing = npz ? s.json : s.npz;
    throw InputError(fs::path(s.npz).parent_path().string() + ": holds " + fs::path(present).filename().string() +
                     " without " + fs::path(missing).filename().string() + ", not a finished " + command +
                     " run whose settings can be checked; pass --overwrite to replace it or choose another --out");
  }
  try {
    std::ifstream(s.json) >> s.record;
  } catch (const nlohmann::json::exception&) {
    throw file_error(s.json, "not valid JSON; start afresh with --overwrite");
  }
  dist::check_same_settings(s.record, settings, {"checkpoint", "class_name"}, option_of, s.json);
  s.n = s.record.at("n").get<int64_t>();
  s.mean_nfe = s.record.at("mean_nfe").get<double>();
  s.max_nfe = s.record.at("max_nfe").get<double>();
  return true;
}

void NfeTally::add(const torch::Tensor& per_batch) {
  for (int64_t i = 0; i < per_batch.size(0); ++i) {
    const auto v = static_cast<double>(per_batch[i].item<int64_t>());
    sum += v;
    max = std::max(max, v);
    ++batches;
  }
}

void check_generation_out(const GenerationOptions& o, const std::vector<std::string>& outputs,
                          const std::string& earlier, const std::string& resume_keeps) {
  if (o.batch < 1) throw InputError("--batch: must be >= 1");
  require_checkpoint_file(o.checkpoint);  // a mistyped path leaves no --out behind
  prepare_output_dir(o.out_dir, "--out");
  dist::ShardDir(o.out_dir + "/shards").check_usable(o.resume, o.overwrite);
  for (const auto& name : outputs)
    if (std::filesystem::exists(o.out_dir + "/" + name) && !o.overwrite && !o.resume)
      throw InputError("--out " + o.out_dir + ": holds the " + name + " of " + earlier + "; pass --resume to keep " +
                       resume_keeps + ", --overwrite to replace it, or choose another --out");
}

// Which labels a run samples with: none (the null label), every class in turn, or one class.
struct GenerationRun::Classes {
  enum Kind { kNone, kAll, kOne } kind = kNone;
  int64_t index = -1;
  Conditioning cond;
};

namespace {

using Classes = GenerationRun::Classes;

Classes parse_classes(const std::string& arg, const Conditioning& cond, const std::vector<std::string>& names) {
  Classes c;
  c.cond = cond;
  if (arg.empty()) return c;
  const int64_t num_classes = cond.num_classes;
  if (num_classes == 0) throw InputError("--class/--classes: the checkpoint's model is not class-conditional");
  if (arg == "all") {
    c.kind = Classes::kAll;
    return c;
  }
  c.kind = Classes::kOne;
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

// Without a class the samples come from the null label, and guidance mixes its velocity in: a model trained without
// label dropout never trained that label, and its samples would be noise that looks like a result.
void check_guidance(const GenerationOptions& o, const Classes& cls) {
  if (cls.cond.num_classes > 0 && !cls.cond.null_label_trained()) {
    if (cls.kind == Classes::kNone)
      throw InputError(o.checkpoint + ": trained with model.unet.class_dropout 0, so its null label (sampling "
                       "without a class) is untrained; pass --class NAME|INDEX or --classes all");
    if (o.cfg_scale != 0.0)
      throw InputError("--cfg-scale: " + o.checkpoint + " was trained with model.unet.class_dropout 0, so guidance "
                       "would mix in its untrained null label; pass --cfg-scale 0");
  }
  if (!(o.cfg_lo >= 0.0 && o.cfg_lo <= o.cfg_hi && o.cfg_hi <= 1.0))
    throw InputError("--cfg-interval: expected LO,HI with 0 <= LO <= HI <= 1 (times of fm's convention: noise at 0, "
                     "data at 1), got " + std::to_string(o.cfg_lo) + "," + std::to_string(o.cfg_hi));
  if (o.cfg_scale != 0.0 && cls.kind == Classes::kNone)
    spdlog::warn("--cfg-scale {} does nothing without --class or --classes", o.cfg_scale);
  if (o.cfg_scale == 0.0 && (o.cfg_lo != 0.0 || o.cfg_hi != 1.0))
    spdlog::warn("--cfg-interval does nothing without --cfg-scale");
}

void log_solve(const SolveSettings& solve) {
  std::string how;
  if (!is_fixed_step(solve.solver))
    how = fmt::format("atol {:g}, rtol {:g}", solve.atol, solve.rtol);
  else
    how = fmt::format("{} steps, {} time grid", solve.steps, name_of(solve.time_grid));
  if (solve.solver == Solver::euler_maruyama)
    how += fmt::format(", diffusion {} x {:g}, last step {:g}", name_of(solve.diffusion), solve.diffusion_norm,
                       solve.sde_last_step);
  spdlog::info("solver {}: {}", name_of(solve.solver), how);
}

}  // namespace

GenerationRun::GenerationRun(const GenerationOptions& o, const torch::Device& device)
    : o_(o), device_(device), ck_(std::make_unique<CheckpointReader>(o.checkpoint, device)) {
  const auto& names = ck_->class_names();
  classes_ = std::make_unique<Classes>(parse_classes(o.classes, conditioning_of(ck_->config().model), names));
  check_guidance(o, *classes_);
  if (classes_->kind == Classes::kOne)
    spdlog::info("class {}{}", classes_->index,
                 classes_->index < static_cast<int64_t>(names.size()) ? " (" + names[classes_->index] + ")" : std::string());
  solve_ = resolve_solve(ck_->config(), o.solve);
  if (solve_.solver == Solver::euler_maruyama) {
    sde_grid(solve_);  // refuses too few steps before any work
    // The score from the velocity is Tweedie's formula, which holds only where the training noise x0 was independent
    // of x1: a coupled model (a rectified flow's pairs, minibatch OT) gets a wrong score and off samples.
    const Coupling coupling = ck_->config().path.coupling;
    if (coupling != Coupling::independent)
      spdlog::warn("--solver euler_maruyama: {} was trained with path.coupling = {}, whose noise is not independent of "
                   "the data; the score the SDE takes from its velocity assumes it is, so its samples will be off "
                   "(sample it with an ODE solver)", o.checkpoint, name_of(coupling));
  }
  log_solve(solve_);
}

GenerationRun::~GenerationRun() = default;

int64_t GenerationRun::num_classes() const { return classes_->cond.num_classes; }

int64_t GenerationRun::cycled_classes() const { return classes_->kind == Classes::kAll ? num_classes() : 0; }

torch::Tensor GenerationRun::labels(int64_t first, int64_t count) const {
  switch (classes_->kind) {
    case Classes::kNone:
      return {};
    case Classes::kAll:
      return torch::arange(first, first + count, torch::kLong) % num_classes();
    case Classes::kOne:
      return torch::full({count}, classes_->index, torch::kLong);
  }
  return {};
}

nlohmann::json GenerationRun::settings() const {
  const bool adaptive = !is_fixed_step(solve_.solver);
  const auto& names = ck_->class_names();
  const Classes& c = *classes_;
  nlohmann::json s;
  record_file(s, "checkpoint", o_.checkpoint);
  s["checkpoint_step"] = ck_->step();
  s["weights"] = name_of(o_.weights);
  s["seed"] = o_.seed;
  s["n"] = o_.n;
  s["batch"] = o_.batch;
  s["solver"] = name_of(solve_.solver);
  s["steps"] = adaptive ? nlohmann::json(nullptr) : nlohmann::json(solve_.steps);
  s["time_grid"] = adaptive ? nlohmann::json(nullptr) : nlohmann::json(name_of(solve_.time_grid));
  s["atol"] = adaptive ? nlohmann::json(solve_.atol) : nlohmann::json(nullptr);
  s["rtol"] = adaptive ? nlohmann::json(solve_.rtol) : nlohmann::json(nullptr);
  // Settings that older runs did not have are recorded only where they apply, so that those runs still resume.
  if (solve_.solver == Solver::euler_maruyama) {
    s["diffusion"] = name_of(solve_.diffusion);
    s["diffusion_norm"] = solve_.diffusion_norm;
    s["sde_last_step"] = solve_.sde_last_step;
  }
  s["classes"] = c.kind == Classes::kNone  ? nlohmann::json(nullptr)
                 : c.kind == Classes::kAll ? nlohmann::json("all")
                                           : nlohmann::json(c.index);
  s["class_name"] = c.kind == Classes::kOne && c.index < static_cast<int64_t>(names.size())
                        ? nlohmann::json(names[c.index])
                        : nlohmann::json(nullptr);
  s["cfg_scale"] = o_.cfg_scale;
  if (o_.cfg_scale != 0.0 && (o_.cfg_lo != 0.0 || o_.cfg_hi != 1.0)) s["cfg_interval"] = {o_.cfg_lo, o_.cfg_hi};
  return s;
}

void GenerationRun::load_network() { model_ = fm::load_network(*ck_, o_.weights, device_); }

torch::Tensor GenerationRun::noise(const ItemRange& b) const {
  return sample_noise(o_.seed, b.first, b.count, shape()).to(device_);
}

GenerationRun::Solved GenerationRun::solve_items(const ItemRange& b, const torch::Tensor& x0,
                                                 const StepCallback& on_step) {
  if (!model_) throw std::logic_error("GenerationRun: load_network() before solve_items()");
  Solved out;
  out.labels = labels(b.first, b.count);
  if (out.labels.defined()) out.labels = out.labels.to(device_);
  StepNoise noise = [&](int64_t k) {
    return sample_noise(o_.seed, b.first, b.count, shape(), 1 + static_cast<uint64_t>(k)).to(device_);
  };
  out.r = generate(*model_, x0, out.labels, solve_, Guidance(o_.cfg_scale, o_.cfg_lo, o_.cfg_hi), on_step, noise);
  return out;
}

}  // namespace fm
