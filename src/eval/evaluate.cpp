#include "eval/evaluate.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
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

// The FID of a samples.npz (arr_0 uint8 N x H x W x C, as run_sampling writes) against reference statistics.
double fid_of_samples(const std::string& npz, FidInception& net, const FidStats& ref, int64_t batch) {
  FidImageOptions io;
  io.batch = batch;
  auto stats = image_stats(net, parse_data_spec("npz:" + npz), io, dist::this_process_only());
  return frechet_distance(stats, ref).distance;
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
  if (o.num_samples < 0) throw InputError("--num-samples: must be >= 0");
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
  return plan;
}

// fm sample's options for one setting: only what applies to its solver, so that sampling warns about nothing.
SampleOptions sample_options(const EvaluateOptions& o, const std::string& name, const SolveSettings& solve) {
  SampleOptions so;
  so.checkpoint = o.checkpoint;
  so.out_dir = o.samples_dir + "/" + name;
  so.weights = o.weights;
  so.device = o.device;
  so.n = std::max<int64_t>(o.num_samples, 1);
  so.batch = o.batch;
  so.seed = o.seed;
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
  s["batch"] = o.batch;
  s["fid_batch"] = o.fid_batch;
  s["fixed_solver"] = name_of(o.fixed_solver);
  if (!o.fid_ref.empty()) record_file(s, "fid_ref", o.fid_ref);
  if (!o.fid_weights.empty()) record_file(s, "fid_weights", o.fid_weights);
  return s;
}

std::string option_of(const std::string& key) {
  if (key.rfind("checkpoint", 0) == 0) return "--checkpoint";
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
  FidStats ref;
  FidInception net;
};

// One sampling run per setting, through fm sample's own code (its samples.npz stays for other tools), with its FID.
nlohmann::json sample_row(const EvaluateOptions& o, const std::string& name, const SolveSettings& solve,
                          FidInputs* fid) {
  auto s = run_sampling(sample_options(o, name, solve));
  nlohmann::json r = {{"solver", name_of(solve.solver)}, {"n", s.n}, {"batch", o.batch},
                      {"mean_nfe", s.mean_nfe}, {"max_nfe", s.max_nfe}, {"samples", s.npz}};
  if (!is_fixed_step(solve.solver)) {
    r["atol"] = solve.atol;
    r["rtol"] = solve.rtol;
  } else {
    r["steps"] = solve.steps;
    r["time_grid"] = name_of(solve.time_grid);
  }
  if (fid) {
    r["fid"] = fid_of_samples(s.npz, fid->net, fid->ref, o.fid_batch);
    r["fid_ref"] = o.fid_ref;
    spdlog::info("evaluate: FID {:.4f} of {} samples by {} (mean NFE {:.1f})", r["fid"].get<double>(), s.n, name,
                 s.mean_nfe);
  }
  return r;
}

}  // namespace

EvaluateResult run_evaluate(const EvaluateOptions& o) {
  check_options(o);
  const nlohmann::json settings = evaluation_settings(o);
  int64_t step = 0;
  bool toy = false, mean_flow = false;
  {
    CheckpointReader ck(o.checkpoint, torch::kCPU);
    step = ck.step();
    toy = ck.sample_shape().size() == 1;
    const auto& m = ck.config().model;
    mean_flow = m.type == ModelType::unet ? m.unet.second_time : m.mlp.second_time;
  }
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
    fid = std::make_unique<FidInputs>(FidInputs{read_fid_stats(o.fid_ref), load_fid_inception(o.fid_weights, device)});
  }
  const auto plan = sampling_plan(o, fid != nullptr, mean_flow);
  for (const auto& [name, solve] : plan) check_sample_out(sample_options(o, name, solve));
  if (!fid && !o.fixed_steps.empty() && o.num_samples > 0) skip("fixed-step FIDs", "no FID to compute");

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
    if (rows.count(name) && (!fid || rows[name].contains("fid"))) continue;
    rows[name] = sample_row(o, name, solve, fid.get());
    save();
  }
  save();
  EvaluateResult r;
  r.markdown = evaluate_markdown(j);
  j["markdown"] = r.markdown;
  if (!o.out.empty()) write_file_atomic(o.out, j.dump(2) + "\n");
  r.json = j;
  return r;
}

std::string evaluate_markdown(const nlohmann::json& j) {
  const bool has_nll = j.contains("nll"), has_samples = j.contains("dopri5");
  const bool nats = has_nll && j["nll"]["metric"] == "nll_nats";
  std::string head = "| Checkpoint | " + std::string(nats ? "NLL (nats)" : "NLL (bits/dim)") + " | FID | NFE |";
  std::string sep = "|---|---:|---:|---:|";
  std::string row = "| " + std::filesystem::path(j["checkpoint"].get<std::string>()).filename().string() + " (step " +
                    std::to_string(j["step"].get<int64_t>()) + ") | ";
  row += has_nll ? fmt("%.2f", j["nll"]["mean"].get<double>()) : "-";
  row += " | ";
  row += has_samples && j["dopri5"].contains("fid") ? fmt("%.2f", j["dopri5"]["fid"].get<double>()) : "-";
  row += " | ";
  row += has_samples ? fmt("%.0f", j["dopri5"]["mean_nfe"].get<double>()) : "-";
  row += " |";
  if (j.contains("fixed"))
    for (const auto& f : j["fixed"]) {
      head += " " + fixed_label(f) + " |";
      sep += "---:|";
      row += " " + (f.contains("fid") ? fmt("%.2f", f["fid"].get<double>()) : std::string("-")) + " |";
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
  auto sample_line = [&](const nlohmann::json& s, const std::string& label) {
    std::string line = "- " + label + ": " + std::to_string(s["n"].get<int64_t>()) + " samples by " +
                       s["solver"].get<std::string>();
    if (s.contains("atol"))
      line += " atol " + fmt("%g", s["atol"].get<double>()) + " rtol " + fmt("%g", s["rtol"].get<double>());
    else
      line += ", " + std::to_string(s["steps"].get<int64_t>()) + " steps (" + s["time_grid"].get<std::string>() + " grid)";
    line += ", seed " + std::to_string(j["seed"].get<uint64_t>()) + ", mean NFE " +
            fmt("%.1f", s["mean_nfe"].get<double>()) + " per batch of " + std::to_string(s["batch"].get<int64_t>());
    line += s.contains("fid") ? ", against " + s["fid_ref"].get<std::string>() : ", FID not computed";
    return line + "; samples in " + s["samples"].get<std::string>() + "\n";
  };
  if (has_samples) md += sample_line(j["dopri5"], "FID, NFE");
  if (j.contains("fixed"))
    for (const auto& f : j["fixed"]) md += sample_line(f, fixed_label(f));
  for (const auto& s : j["skipped"]) md += "- skipped: " + s.get<std::string>() + "\n";
  return md;
}

}  // namespace fm
