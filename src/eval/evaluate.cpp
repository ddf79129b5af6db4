#include "eval/evaluate.h"

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>

#include <spdlog/spdlog.h>

#include "checkpoint/checkpoint.h"
#include "data/dataset.h"
#include "eval/eval_nll.h"
#include "fid/fid_run.h"
#include "fid/fid_stats.h"
#include "fid/frechet.h"
#include "fid/inception.h"
#include "fid/precision_recall.h"
#include "dist/shard_dir.h"
#include "io/file_util.h"
#include "io/provenance.h"
#include "io/run_lock.h"
#include "sample/sample_run.h"
#include "util/device.h"
#include "util/error.h"

namespace fm {

namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string fixed_label(const nlohmann::json& s) {
  return "FID " + s["solver"].get<std::string>() + " " + std::to_string(s["steps"].get<int64_t>());
}

// Cheap checks first: a bad argument fails before hours of work.
void check_options(const EvaluateOptions& o) {
  if (o.resume && o.overwrite) throw InputError("--resume and --overwrite: choose one");
  if (o.fid_ref.empty() != o.fid_weights.empty())
    throw InputError(std::string(o.fid_ref.empty() ? "--fid-weights" : "--fid-ref") + " given without " +
                     (o.fid_ref.empty() ? "--fid-ref" : "--fid-weights") + ": FID needs both");
  if (!o.fid_ref_features.empty() && o.fid_ref.empty())
    throw InputError("--fid-ref-features given without --fid-ref and --fid-weights: precision and recall come with FID");
  if (o.num_samples < 0) throw InputError("--num-samples: must be >= 0");
  if (o.seeds < 1) throw InputError("--seeds: must be >= 1");
  if (o.batch < 1 || o.fid_batch < 1 || o.nll_batch < 1)
    throw InputError("--batch, --fid-batch, --nll-batch: must be >= 1");
  if (!is_fixed_step(o.fixed_solver))
    throw InputError(std::string("--fixed-solver ") + name_of(o.fixed_solver) + ": expected a fixed-step solver");
  for (auto s : o.fixed_steps)
    if (s < 1) throw InputError("--fixed-steps: step counts must be >= 1, got " + std::to_string(s));
  if (!o.data.empty()) parse_data_spec(o.data);
}

// The sampling settings of an evaluation by name: dopri5 at the tolerances, then each fixed-step budget, then for a
// network of average velocities (MeanFlow) its one- and two-step samples (fixed budgets only with FID: their NFE is
// known in advance, so without FID their samples would say nothing more).
std::vector<std::pair<std::string, SolveSettings>> sampling_plan(const EvaluateOptions& o, bool with_fid,
                                                                 bool mean_flow) {
  std::vector<std::pair<std::string, SolveSettings>> plan;
  if (o.num_samples == 0) return plan;
  SolveSettings adaptive;
  adaptive.solver = Solver::dopri5;
  adaptive.atol = o.atol;
  adaptive.rtol = o.rtol;
  plan.emplace_back("dopri5", adaptive);
  for (auto steps : with_fid ? o.fixed_steps : std::vector<int64_t>{}) {
    SolveSettings fixed;
    fixed.solver = o.fixed_solver;
    fixed.steps = steps;
    plan.emplace_back(std::string(name_of(o.fixed_solver)) + "_" + std::to_string(steps), fixed);
  }
  for (int64_t steps : with_fid && mean_flow ? std::vector<int64_t>{1, 2} : std::vector<int64_t>{}) {
    SolveSettings few;
    few.solver = Solver::meanflow;
    few.steps = steps;
    const std::string name = std::string(name_of(Solver::meanflow)) + "_" + std::to_string(steps);
    if (std::none_of(plan.begin(), plan.end(), [&](const auto& p) { return p.first == name; }))
      plan.emplace_back(name, few);
  }
  if (with_fid && o.sde_steps > 0) {
    SolveSettings sde;  // the diffusion and last step of the checkpoint's sample section
    sde.solver = Solver::euler_maruyama;
    sde.steps = o.sde_steps;
    plan.emplace_back(std::string(name_of(sde.solver)) + "_" + std::to_string(o.sde_steps), sde);
  }
  return plan;
}

// The seeds of each setting's sample sets: seed, seed + 1, ..., seed + K - 1.
std::vector<uint64_t> sample_seeds(const EvaluateOptions& o) {
  std::vector<uint64_t> seeds;
  for (int64_t i = 0; i < o.seeds; ++i) seeds.push_back(o.seed + static_cast<uint64_t>(i));
  return seeds;
}

// fm sample's options for one setting and seed: only what applies to its solver, so that sampling warns about nothing.
SampleOptions sample_options(const EvaluateOptions& o, const std::string& name, const SolveSettings& solve,
                             uint64_t seed) {
  SampleOptions so;
  so.checkpoint = o.checkpoint;
  so.out_dir = o.samples_dir + "/" + name + "/seed_" + std::to_string(seed);
  so.weights = o.weights;
  so.device = o.device;
  so.n = std::max<int64_t>(o.num_samples, 1);
  so.batch = o.batch;
  so.seed = seed;
  so.solve.solver = solve.solver;
  if (!is_fixed_step(solve.solver)) {
    so.solve.atol = solve.atol;
    so.solve.rtol = solve.rtol;
  } else {
    so.solve.steps = solve.steps;
    so.solve.time_grid = solve.time_grid;
  }
  so.resume = o.resume;
  so.overwrite = o.overwrite;
  return so;
}

// What decides the figures of an evaluation; a --resume must have the same.
nlohmann::json evaluation_settings(const EvaluateOptions& o) {
  nlohmann::json s;
  record_file(s, "checkpoint", o.checkpoint);
  s["weights"] = name_of(o.weights);
  s["seed"] = o.seed;
  s["data"] = o.data;
  s["split"] = name_of(o.split);
  s["nll_limit"] = o.nll_limit;
  s["nll_batch"] = o.nll_batch;
  s["probe"] = name_of(o.probe);
  s["dequant_samples"] = o.dequant_samples;
  s["atol"] = o.atol;
  s["rtol"] = o.rtol;
  s["num_samples"] = o.num_samples;
  s["seeds"] = o.seeds;
  s["resize"] = name_of(o.resize);
  s["batch"] = o.batch;
  s["fid_batch"] = o.fid_batch;
  s["fixed_solver"] = name_of(o.fixed_solver);
  if (o.sde_steps > 0) s["sde_steps"] = o.sde_steps;
  if (!o.fid_ref.empty()) record_file(s, "fid_ref", o.fid_ref);
  if (!o.fid_weights.empty()) record_file(s, "fid_weights", o.fid_weights);
  if (!o.fid_ref_features.empty()) record_file(s, "fid_ref_features", o.fid_ref_features);
  return s;
}

std::string option_of(const std::string& key) {
  if (key.rfind("checkpoint", 0) == 0) return "--checkpoint";
  if (key.rfind("fid_ref_features", 0) == 0) return "--fid-ref-features";
  if (key.rfind("fid_ref", 0) == 0) return "--fid-ref";
  if (key.rfind("fid_weights", 0) == 0) return "--fid-weights";
  std::string opt = "--" + key;
  std::replace(opt.begin(), opt.end(), '_', '-');
  return opt;
}

// The rows an earlier evaluation wrote to --out, kept by a --resume: "nll", and each sampling setting by name.
std::map<std::string, nlohmann::json> earlier_rows(const EvaluateOptions& o, const nlohmann::json& settings) {
  std::map<std::string, nlohmann::json> rows;
  if (o.out.empty() || !std::filesystem::exists(o.out)) return rows;
  if (!o.resume && !o.overwrite)
    throw InputError("--out " + o.out + ": holds the results of an earlier evaluation; pass --resume to continue it, "
                     "--overwrite to start afresh, or choose another --out");
  if (o.overwrite) return rows;
  nlohmann::json before;
  try {
    std::ifstream(o.out) >> before;
  } catch (const nlohmann::json::exception&) {
    throw file_error(o.out, "not valid JSON; start afresh with --overwrite");
  }
  if (!before.contains("settings"))
    throw file_error(o.out, "records no settings to continue from; start afresh with --overwrite");
  dist::check_same_settings(before["settings"], settings, {"checkpoint"}, option_of, o.out);
  if (before.contains("nll")) rows["nll"] = before["nll"];
  if (before.contains("dopri5")) rows["dopri5"] = before["dopri5"];
  for (const auto& f : before.value("fixed", nlohmann::json::array()))
    rows[f["solver"].get<std::string>() + "_" + std::to_string(f["steps"].get<int64_t>())] = f;
  return rows;
}

nlohmann::json nll_row(const EvaluateOptions& o) {
  EvalNllOptions e;
  e.checkpoint = o.checkpoint;
  e.data = o.data;
  e.split = o.split;
  e.limit = o.nll_limit;
  e.batch = o.nll_batch;
  e.divergence = Divergence::hutchinson;
  e.probe = o.probe;
  e.dequant_samples = o.dequant_samples;
  e.atol = o.atol;
  e.rtol = o.rtol;
  e.seed = o.seed;
  e.weights = o.weights;
  e.device = o.device;
  auto s = run_eval_nll(e);
  spdlog::info("evaluate: {} = {:.4f} +- {:.4f} over {} items of {}, mean NFE {:.1f}",
               s.metric == "bits_per_dim" ? "bits/dim" : "NLL (nats)", s.mean, s.stderr_mean, s.n,
               s.json.value("data_description", std::string()), s.mean_nfe);
  return s.json;
}

// The FID network and reference, read before any long computation so that a bad file fails at once.
struct FidInputs {
  StatsWithProvenance ref;
  FidInception net;
  torch::Tensor ref_features;  // on the network's device; undefined without --fid-ref-features
};

FidInputs read_fid_inputs(const EvaluateOptions& o, const torch::Device& device) {
  FidInputs f{read_stats_with_provenance(o.fid_ref), load_fid_inception(o.fid_weights, device), {}};
  if (!o.fid_ref_features.empty()) {
    auto features = read_features(o.fid_ref_features);
    if (features.size(1) != f.ref.stats.mu.size(0) || (f.ref.stats.n >= 0 && features.size(0) != f.ref.stats.n))
      throw file_error(o.fid_ref_features, "holds " + std::to_string(features.size(0)) + " x " +
                                               std::to_string(features.size(1)) + " features; --fid-ref " + o.fid_ref +
                                               " is of " + (f.ref.stats.n >= 0 ? std::to_string(f.ref.stats.n) : "?") +
                                               " images of " + std::to_string(f.ref.stats.mu.size(0)) + " features");
    if (features.size(0) <= kPrecisionRecallK)
      throw file_error(o.fid_ref_features, "precision and recall need more than " +
                                               std::to_string(kPrecisionRecallK) + " reference images");
    f.ref_features = features.to(device, torch::kFloat32);
  }
  return f;
}

// What an SDE sample set records of its sampler (the checkpoint's sample section), kept in its run and row.
constexpr const char* kSdeKeys[] = {"diffusion", "diffusion_norm", "sde_last_step"};

// One seed's samples of a setting, through fm sample's own code (its samples.npz stays for other tools), with the FID
// of their statistics (kept beside them as fid_stats.npz) and, with the reference's features, precision and recall.
nlohmann::json seed_run(const EvaluateOptions& o, const std::string& name, const SolveSettings& solve, uint64_t seed,
                        FidInputs* fid) {
  auto s = run_sampling(sample_options(o, name, solve, seed));
  nlohmann::json run = {{"seed", seed}, {"samples", s.npz}, {"mean_nfe", s.mean_nfe}, {"max_nfe", s.max_nfe}};
  for (const char* key : kSdeKeys)
    if (s.record.contains(key)) run[key] = s.record[key];
  if (!fid) return run;
  FidImageOptions io;
  io.batch = o.fid_batch;
  io.resize = o.resize;
  const bool pr = fid->ref_features.defined();
  auto f = image_features(fid->net, parse_data_spec("npz:" + s.npz), io, dist::this_process_only(), pr);
  const std::string stats = (std::filesystem::path(s.npz).parent_path() / "fid_stats.npz").string();
  auto record = f.about;
  record.erase("provenance");
  record["statistics"] = stats;
  record_file(record, "weights", o.fid_weights);
  record_software(record, fid->net->Conv2d_1a_3x3->conv->weight.device());
  write_stats_with_provenance(stats, f.result.stats, record);
  run["stats"] = stats;
  run["fid"] = frechet_distance(f.result.stats, fid->ref.stats).distance;
  if (pr) {
    auto p = precision_recall(fid->ref_features, f.result.features.to(fid->ref_features.device()));
    run["precision"] = p.precision;
    run["recall"] = p.recall;
  }
  spdlog::info("evaluate: FID {:.4f} of {} samples by {}, seed {} (mean NFE {:.1f}){}", run["fid"].get<double>(), s.n,
               name, seed, s.mean_nfe,
               pr ? fmt::format(", precision {:.4f}, recall {:.4f}", run["precision"].get<double>(),
                                run["recall"].get<double>())
                  : std::string());
  return run;
}

// Whether a setting's row has every seed's run (with its FID when FID is computed).
bool row_complete(const nlohmann::json& row, const std::vector<uint64_t>& seeds, bool with_fid) {
  if (!row.contains("runs")) return false;
  for (auto seed : seeds) {
    bool found = false;
    for (const auto& r : row["runs"])
      found |= r.value("seed", uint64_t{0}) == seed && (!with_fid || r.contains("fid"));
    if (!found) return false;
  }
  return true;
}

// The row's figures over its runs: mean NFE over the seeds, the largest NFE; FID mean, sample standard deviation
// (n - 1; null for one seed) and minimum; precision and recall means.
void summarise_runs(nlohmann::json& row) {
  const auto& runs = row["runs"];
  const double k = static_cast<double>(runs.size());
  double nfe = 0, max_nfe = 0;
  for (const auto& r : runs) nfe += r["mean_nfe"].get<double>(), max_nfe = std::max(max_nfe, r["max_nfe"].get<double>());
  row["mean_nfe"] = nfe / k;
  row["max_nfe"] = max_nfe;
  auto mean_of = [&](const char* key) {
    double sum = 0;
    for (const auto& r : runs) sum += r[key].get<double>();
    return sum / k;
  };
  auto all_have = [&](const char* key) {
    return std::all_of(runs.begin(), runs.end(), [&](const nlohmann::json& r) { return r.contains(key); });
  };
  if (runs.empty() || !all_have("fid")) return;
  const double mean = mean_of("fid");
  double ss = 0, low = INFINITY;
  for (const auto& r : runs) ss += std::pow(r["fid"].get<double>() - mean, 2), low = std::min(low, r["fid"].get<double>());
  row["fid"] = mean;
  row["fid_std"] = runs.size() > 1 ? nlohmann::json(std::sqrt(ss / (k - 1))) : nlohmann::json(nullptr);
  row["fid_min"] = low;
  if (all_have("precision")) {
    row["precision"] = mean_of("precision");
    row["recall"] = mean_of("recall");
  }
}

// One setting: a sample set per seed with its FID, each run kept in `earlier` reused, `save` called after each seed.
nlohmann::json sample_row(const EvaluateOptions& o, const std::string& name, const SolveSettings& solve,
                          FidInputs* fid, const nlohmann::json& earlier,
                          const std::function<void(const nlohmann::json&)>& save) {
  const auto seeds = sample_seeds(o);
  nlohmann::json r = {{"solver", name_of(solve.solver)}, {"n", std::max<int64_t>(o.num_samples, 1)},
                      {"batch", o.batch}, {"seeds", seeds}, {"samples", o.samples_dir + "/" + name}};
  if (!is_fixed_step(solve.solver)) {
    r["atol"] = solve.atol;
    r["rtol"] = solve.rtol;
  } else {
    r["steps"] = solve.steps;
    r["time_grid"] = name_of(solve.time_grid);
  }
  r["runs"] = nlohmann::json::array();
  for (auto seed : seeds) {
    nlohmann::json kept;
    for (const auto& run : earlier.value("runs", nlohmann::json::array()))
      if (run.value("seed", uint64_t{0}) == seed && (!fid || run.contains("fid"))) kept = run;
    r["runs"].push_back(kept.is_null() ? seed_run(o, name, solve, seed, fid) : kept);
    for (const char* key : kSdeKeys)  // the SDE row's, as each seed's samples record them
      if (r["runs"].back().contains(key)) r[key] = r["runs"].back()[key];
    summarise_runs(r);
    save(r);
  }
  return r;
}

}  // namespace

EvaluateResult run_evaluate(const EvaluateOptions& o) {
  check_options(o);
  const nlohmann::json settings = evaluation_settings(o);
  int64_t step = 0;
  std::vector<int64_t> shape;
  bool mean_flow = false;
  {
    CheckpointReader ck(o.checkpoint, torch::kCPU);
    step = ck.step();
    shape = ck.sample_shape();
    const auto& m = ck.config().model;
    mean_flow = m.type == ModelType::unet ? m.unet.second_time : m.mlp.second_time;
  }
  const bool toy = shape.size() == 1;
  const auto device = resolve_device(o.device);
  nlohmann::json j = {{"checkpoint", o.checkpoint}, {"step", step},          {"weights", name_of(o.weights)},
                      {"device", device.str()},     {"seed", o.seed},        {"settings", settings},
                      {"skipped", nlohmann::json::array()}};
  auto skip = [&](const std::string& what, const std::string& why) {
    spdlog::warn("evaluate: {} skipped: {}", what, why);
    j["skipped"].push_back(what + ": " + why);
  };

  // Every output is checked, and held for this run, before any work: --out, and the samples of every setting.
  std::unique_ptr<RunLock> samples_lock, out_lock;
  if (o.num_samples > 0) {
    prepare_output_dir(o.samples_dir, "--samples-dir");
    samples_lock = std::make_unique<RunLock>(RunLock::in_dir(o.samples_dir), "--samples-dir " + o.samples_dir);
  }
  if (!o.out.empty()) {
    prepare_output_file(o.out, "--out");
    out_lock = std::make_unique<RunLock>(o.out + ".lock", "--out " + o.out);
  }
  auto rows = earlier_rows(o, settings);
  std::unique_ptr<FidInputs> fid;
  if (o.num_samples == 0) {
    skip("samples", "--num-samples 0 (no FID, no sampling NFE)");
  } else if (o.fid_ref.empty()) {
    skip("FID", "no --fid-ref and --fid-weights (the samples are kept; fm fid SAMPLES.npz STATS --weights W gives it "
                "later)");
  } else if (toy) {
    skip("FID", "a 2-D model; FID needs images");
  } else if (o.num_samples < 2) {
    throw InputError("--num-samples: FID needs at least 2 samples");
  } else {
    fid = std::make_unique<FidInputs>(read_fid_inputs(o, device));
    // The samples are of the model's resolution; the reference must be of the same (checked before any sampling).
    const nlohmann::json samples = {{"resolution", {shape[1], shape[2]}}, {"resize", name_of(o.resize)}};
    check_comparable(samples, "the samples of " + o.checkpoint, fid->ref.about, "--fid-ref " + o.fid_ref,
                     o.allow_resolution_mismatch);
    j["fid_ref"] = fid->ref.about;
    j["fid_ref"]["file"] = o.fid_ref;
    j["fid_ref"]["features"] = o.fid_ref_features.empty() ? nlohmann::json(nullptr) : nlohmann::json(o.fid_ref_features);
    j["resize"] = name_of(o.resize);
    spdlog::info("evaluate: FID against {}: {}", o.fid_ref, about_line(fid->ref.about));
    if (o.fid_ref_features.empty())
      skip("precision and recall", "no --fid-ref-features (the reference's features, from fm fid-features "
                                   "--save-features)");
  }
  const auto plan = sampling_plan(o, fid != nullptr, mean_flow);
  for (const auto& [name, solve] : plan)
    for (auto seed : sample_seeds(o)) check_sample_out(sample_options(o, name, solve, seed));
  if (!fid && (!o.fixed_steps.empty() || o.sde_steps > 0) && o.num_samples > 0)
    skip("fixed-step FIDs", "no FID to compute");

  // The figures, each written to --out as soon as it is known; a resume keeps the rows it already has.
  auto save = [&] {
    j["fixed"] = nlohmann::json::array();
    for (const auto& [name, row] : rows) {
      if (name == "nll" || name == "dopri5") j[name] = row;
      else j["fixed"].push_back(row);
    }
    if (!o.out.empty()) write_file_atomic(o.out, j.dump(2) + "\n");
  };
  if (!o.nll) skip("NLL", "--no-nll");
  if (o.nll && !rows.count("nll")) {
    rows["nll"] = nll_row(o);
    save();
  }
  for (const auto& [name, solve] : plan) {
    if (rows.count(name) && row_complete(rows[name], sample_seeds(o), fid != nullptr)) continue;
    const auto earlier = rows.count(name) ? rows[name] : nlohmann::json::object();
    sample_row(o, name, solve, fid.get(), earlier, [&](const nlohmann::json& row) {
      rows[name] = row;
      save();
    });
  }
  save();
  EvaluateResult r;
  r.markdown = evaluate_markdown(j);
  j["markdown"] = r.markdown;
  if (!o.out.empty()) write_file_atomic(o.out, j.dump(2) + "\n");
  r.json = j;
  return r;
}

namespace {

std::string joined(const nlohmann::json& runs, const char* key, const char* format) {
  std::string s;
  for (const auto& r : runs) {
    if (!s.empty()) s += ", ";
    s += r[key].is_number_unsigned() ? std::to_string(r[key].get<uint64_t>()) : fmt(format, r[key].get<double>());
  }
  return s;
}

std::string sample_line(const nlohmann::json& s, const std::string& label) {
  const auto& runs = s["runs"];
  std::string line = "- " + label + ": " + std::to_string(s["n"].get<int64_t>()) + " samples by " +
                     s["solver"].get<std::string>();
  if (s.contains("atol"))
    line += " atol " + fmt("%g", s["atol"].get<double>()) + " rtol " + fmt("%g", s["rtol"].get<double>());
  else
    line += ", " + std::to_string(s["steps"].get<int64_t>()) + " steps (" + s["time_grid"].get<std::string>() + " grid)";
  line += std::string(runs.size() > 1 ? ", seeds " : ", seed ") + joined(runs, "seed", "") + ", mean NFE " +
          fmt("%.1f", s["mean_nfe"].get<double>()) + " per batch of " + std::to_string(s["batch"].get<int64_t>());
  if (!s.contains("fid")) {
    line += ", FID not computed";
  } else if (runs.size() > 1) {
    line += "; FID " + joined(runs, "fid", "%.4f") + " (mean " + fmt("%.4f", s["fid"].get<double>()) + ", standard "
            "deviation " + fmt("%.4f", s["fid_std"].get<double>()) + ", min " + fmt("%.4f", s["fid_min"].get<double>()) +
            ")";
  } else {
    line += "; FID " + fmt("%.4f", s["fid"].get<double>());
  }
  if (s.contains("precision"))
    line += "; precision " + fmt("%.4f", s["precision"].get<double>()) + ", recall " +
            fmt("%.4f", s["recall"].get<double>()) + " (k = " + std::to_string(kPrecisionRecallK) +
            (runs.size() > 1 ? ", means over the seeds)" : ")");
  return line + "; samples in " + s["samples"].get<std::string>() + "/seed_S\n";
}

}  // namespace

std::string fid_cell(const nlohmann::json& s) {
  if (!s.contains("fid")) return "-";
  if (s["fid_std"].is_null()) return fmt("%.2f", s["fid"].get<double>());
  return fmt("%.2f", s["fid"].get<double>()) + " +- " + fmt("%.2f", s["fid_std"].get<double>()) + ", min " +
         fmt("%.2f", s["fid_min"].get<double>());
}

std::string evaluate_markdown(const nlohmann::json& j) {
  const bool has_nll = j.contains("nll"), has_samples = j.contains("dopri5");
  const bool nats = has_nll && j["nll"]["metric"] == "nll_nats";
  const size_t seeds = has_samples ? j["dopri5"]["runs"].size() : 1;
  const bool has_pr = has_samples && j["dopri5"].contains("precision");
  std::string head = "| Checkpoint | " + std::string(nats ? "NLL (nats)" : "NLL (bits/dim)") + " | " +
                     (seeds > 1 ? "FID (" + std::to_string(seeds) + " seeds: mean +- sd, min)" : std::string("FID")) +
                     " | NFE |" + (has_pr ? " Precision | Recall |" : "");
  std::string sep = std::string("|---|---:|---:|---:|") + (has_pr ? "---:|---:|" : "");
  std::string row = "| " + std::filesystem::path(j["checkpoint"].get<std::string>()).filename().string() + " (step " +
                    std::to_string(j["step"].get<int64_t>()) + ") | ";
  row += has_nll ? fmt("%.2f", j["nll"]["mean"].get<double>()) : "-";
  row += " | ";
  row += has_samples ? fid_cell(j["dopri5"]) : "-";
  row += " | ";
  row += has_samples ? fmt("%.0f", j["dopri5"]["mean_nfe"].get<double>()) : "-";
  row += " |";
  if (has_pr)
    row += " " + fmt("%.3f", j["dopri5"]["precision"].get<double>()) + " | " +
           fmt("%.3f", j["dopri5"]["recall"].get<double>()) + " |";
  if (j.contains("fixed"))
    for (const auto& f : j["fixed"]) {
      head += " " + fixed_label(f) + " |";
      sep += "---:|";
      row += " " + fid_cell(f) + " |";
    }
  std::string md = head + "\n" + sep + "\n" + row + "\n\n";
  if (has_nll) {
    const auto& n = j["nll"];
    md += "- NLL: " + fmt("%.4f", n["mean"].get<double>()) + " +- " + fmt("%.4f", n["stderr"].get<double>()) +
          " (standard error) over " + std::to_string(n["n"].get<int64_t>()) + " items of " +
          n.value("data_description", n["data"].get<std::string>()) + "; dopri5 atol " +
          fmt("%g", n["atol"].get<double>()) + " rtol " + fmt("%g", n["rtol"].get<double>()) + ", Hutchinson (" +
          n["probe"].get<std::string>() + " probe)" +
          (nats ? "" : ", K = " + std::to_string(n["dequant_samples"].get<int64_t>()) + " dequantisation draw(s)") +
          ", mean NFE " + fmt("%.1f", n["mean_nfe"].get<double>()) + "\n";
  }
  if (j.contains("fid_ref"))
    md += "- FID reference: " + j["fid_ref"]["file"].get<std::string>() + ", " + about_line(j["fid_ref"]) +
          "; the samples resized by " + j["resize"].get<std::string>() + "\n";
  if (has_samples) md += sample_line(j["dopri5"], "FID, NFE");
  if (j.contains("fixed"))
    for (const auto& f : j["fixed"]) md += sample_line(f, fixed_label(f));
  for (const auto& s : j["skipped"]) md += "- skipped: " + s.get<std::string>() + "\n";
  return md;
}

}  // namespace fm
