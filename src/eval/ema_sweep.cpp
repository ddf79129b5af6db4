#include "eval/ema_sweep.h"

#include <cstdio>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "checkpoint/phema_reconstruct.h"
#include "io/file_util.h"
#include "util/error.h"

namespace fm {
namespace fs = std::filesystem;

namespace {

std::string number_text(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// The run's snapshot folder, beside the checkpoints/ folder that holds `checkpoint`.
std::string snapshot_dir_of(const std::string& checkpoint) {
  const fs::path dir = fs::path(checkpoint).parent_path();
  if (dir.filename() != "checkpoints")
    throw InputError("--ema-sweep: --checkpoint " + checkpoint + " is not in a run's checkpoints/ folder, beside which "
                     "phema/ holds the post-hoc EMA snapshots");
  return (dir.parent_path() / "phema").string();
}

void check_sweep_options(const EvaluateOptions& o) {
  if (o.weights != Weights::ema) throw InputError("--ema-sweep: evaluates EMA weights; leave --weights at ema");
  if (o.resume && o.overwrite) throw InputError("--resume and --overwrite: choose one");
  if (o.out.empty()) return;
  prepare_output_file(o.out, "--out");
  if (fs::exists(o.out) && !o.resume && !o.overwrite)
    throw InputError("--out " + o.out + ": holds the results of an earlier evaluation; pass --resume to continue it, "
                     "--overwrite to start afresh, or choose another --out");
}

}  // namespace

EmaSweepResult run_ema_sweep(const EvaluateOptions& o, const std::vector<double>& sigma_rels) {
  check_sweep_options(o);
  PhemaReconstruction rec;
  rec.checkpoint = o.checkpoint;
  rec.snapshot_dir = snapshot_dir_of(o.checkpoint);
  rec.sigma_rels = sigma_rels;
  rec.out_dir = o.samples_dir + "/ema";
  rec.out_option = "--samples-dir";
  // A reconstruction's bytes depend only on its inputs, so one written again for --resume is the file the evaluation
  // it continues recorded.
  rec.overwrite = o.resume || o.overwrite;
  const auto emas = reconstruct_phema(rec);

  nlohmann::json j = {{"checkpoint", o.checkpoint},
                      {"snapshot_dir", rec.snapshot_dir},
                      {"samples_dir", o.samples_dir},
                      {"sweep", nlohmann::json::array()}};
  for (const auto& e : emas) {
    EvaluateOptions one = o;
    one.checkpoint = e.checkpoint;
    one.samples_dir = o.samples_dir + "/sigma_" + number_text("%g", e.sigma_rel);
    one.out = one.samples_dir + "/evaluate.json";
    spdlog::info("ema sweep: sigma_rel {} ({} of {})", e.sigma_rel, j["sweep"].size() + 1, emas.size());
    auto r = run_evaluate(one);
    j["step"] = e.step;
    j["sweep"].push_back({{"sigma_rel", e.sigma_rel}, {"gamma", e.gamma}, {"checkpoint", e.checkpoint},
                          {"record", e.record}, {"profiles_combined", e.inputs}, {"evaluate", r.json}});
    if (!o.out.empty()) write_file_atomic(o.out, j.dump(2) + "\n");
  }
  EmaSweepResult out;
  out.markdown = ema_sweep_markdown(j);
  j["markdown"] = out.markdown;
  if (!o.out.empty()) write_file_atomic(o.out, j.dump(2) + "\n");
  out.json = j;
  return out;
}

std::string ema_sweep_markdown(const nlohmann::json& j) {
  const auto& rows = j["sweep"];
  if (rows.empty()) return "";
  const auto& first = rows[0]["evaluate"];
  const bool nats = first.contains("nll") && first["nll"]["metric"] == "nll_nats";
  const auto seeds = first.contains("dopri5") ? first["dopri5"].value("seeds", nlohmann::json::array()).size() : 0;
  std::string head = std::string("| sigma_rel | gamma | ") + (nats ? "NLL (nats)" : "NLL (bits/dim)") + " | " +
                     (seeds > 1 ? "FID (" + std::to_string(seeds) + " seeds: mean +- sd, min)" : std::string("FID")) +
                     " | NFE |";
  std::string sep = "|---:|---:|---:|---:|---:|";
  for (const auto& f : first.value("fixed", nlohmann::json::array())) {
    head += " FID " + f["solver"].get<std::string>() + " " + std::to_string(f["steps"].get<int64_t>()) + " |";
    sep += "---:|";
  }
  std::string md = head + "\n" + sep + "\n";
  for (const auto& row : rows) {
    const auto& e = row["evaluate"];
    md += "| " + number_text("%g", row["sigma_rel"].get<double>()) + " | " +
          number_text("%.2f", row["gamma"].get<double>()) + " | ";
    md += (e.contains("nll") ? number_text("%.3f", e["nll"]["mean"].get<double>()) : "-") + " | ";
    md += (e.contains("dopri5") ? fid_cell(e["dopri5"]) : "-") + " | ";
    md += (e.contains("dopri5") ? number_text("%.0f", e["dopri5"]["mean_nfe"].get<double>()) : "-") + " |";
    for (const auto& f : e.value("fixed", nlohmann::json::array())) md += " " + fid_cell(f) + " |";
    md += "\n";
  }
  md += "\n- EMA of each length reconstructed at step " + std::to_string(j["step"].get<int64_t>()) + " of " +
        j["checkpoint"].get<std::string>() + " from the snapshots in " + j["snapshot_dir"].get<std::string>() +
        "; each row's figures and settings are in " + j["samples_dir"].get<std::string>() +
        "/sigma_<sigma_rel>/evaluate.json\n";
  return md;
}

}  // namespace fm
