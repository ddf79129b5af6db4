#include "checkpoint/phema_reconstruct.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/phema_math.h"
#include "checkpoint/phema_snapshot.h"
#include "io/file_util.h"
#include "io/provenance.h"
#include "nn/velocity_field.h"
#include "util/cpu_generator_kept.h"
#include "util/error.h"

namespace fm {
namespace fs = std::filesystem;

namespace {

std::string sigma_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", s);
  return buf;
}

std::string hash_text(uint64_t h) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string steps_listed(const std::vector<std::pair<int64_t, std::string>>& files) {
  std::string s;
  for (const auto& f : files) s += (s.empty() ? "" : ", ") + std::to_string(f.first);
  return s.empty() ? "none" : s;
}

// One snapshotted profile: profile `index` of the snapshot at `path`.
struct SnapshotInput {
  std::string path;
  int64_t step = 0;
  size_t index = 0;
  double sigma_rel = 0.0, gamma = 0.0;
  uint64_t hash = 0;
};

void check_target_lengths(const std::vector<double>& sigma_rels) {
  if (sigma_rels.empty()) throw InputError("--sigma-rel: give at least one length to reconstruct");
  std::set<std::string> names;
  for (double s : sigma_rels) {
    if (!(s > 0.0 && s <= phema::kMaxSigmaRel))
      throw InputError("--sigma-rel " + sigma_text(s) + ": must be in (0, 0.2887], the lengths of power-function "
                       "profiles (sqrt(1/12) is the plain running mean)");
    if (!names.insert(sigma_text(s)).second) throw InputError("--sigma-rel " + sigma_text(s) + ": given twice");
  }
}

// Pass one: every snapshotted profile at steps <= `step` (of the lengths asked for, if any), verified.
std::vector<SnapshotInput> gather_inputs(const PhemaReconstruction& r, int64_t step) {
  const auto files = list_phema_snapshots(r.snapshot_dir);
  if (files.empty())
    throw InputError(r.snapshot_dir + ": holds no post-hoc EMA snapshots (phema_<step>.pt); a run writes them with "
                     "train.ema_snapshot_every > 0");
  if (std::none_of(files.begin(), files.end(), [&](const auto& f) { return f.first == step; }))
    throw InputError(r.snapshot_dir + ": no snapshot at step " + std::to_string(step) + ", the step of the checkpoint "
                     "to reconstruct (snapshots at steps " + steps_listed(files) + ")");
  std::vector<SnapshotInput> inputs;
  std::set<double> seen;
  for (const auto& [s, path] : files) {
    if (s > step) continue;
    PhemaSnapshotReader snap(path);
    if (snap.step() != s) throw file_error(path, "holds step " + std::to_string(snap.step()) + ", not its name's");
    for (size_t k = 0; k < snap.sigma_rels().size(); ++k) {
      const double sr = snap.sigma_rels()[k];
      seen.insert(sr);
      const auto& want = r.input_sigma_rels;
      if (!want.empty() && std::find(want.begin(), want.end(), sr) == want.end()) continue;
      double gamma = 0.0;
      try {
        gamma = phema::sigma_rel_to_gamma(sr);
      } catch (const std::invalid_argument& e) {
        throw file_error(path, std::string("profile ") + std::to_string(k) + ": " + e.what());
      }
      inputs.push_back({path, s, k, sr, gamma, snap.hash()});
    }
  }
  for (double w : r.input_sigma_rels)
    if (!seen.count(w))
      throw InputError("--from-sigma-rel " + sigma_text(w) + ": no snapshot holds a profile of that length (they " +
                       "hold " + nlohmann::json(std::vector<double>(seen.begin(), seen.end())).dump() + ")");
  return inputs;
}

// Pass two: sum_i x_ij theta_i for every target j, in float64, one snapshot file in memory at a time.
std::vector<std::vector<torch::Tensor>> combine_profiles(const std::vector<SnapshotInput>& inputs,
                                                const std::vector<std::vector<double>>& x, VelocityField& scratch) {
  const auto shapes = scratch.parameters();
  std::vector<std::vector<torch::Tensor>> acc(x.size());
  for (auto& a : acc)
    for (const auto& p : shapes) a.push_back(torch::zeros(p.sizes(), torch::kFloat64));
  for (size_t i = 0; i < inputs.size();) {
    PhemaSnapshotReader snap(inputs[i].path);
    if (snap.hash() != inputs[i].hash) throw file_error(snap.path(), "changed while it was being read");
    for (; i < inputs.size() && inputs[i].path == snap.path(); ++i) {
      snap.load_profile(inputs[i].index, scratch);
      const auto params = scratch.parameters();
      for (size_t j = 0; j < x.size(); ++j)
        for (size_t p = 0; p < params.size(); ++p) acc[j][p].add_(params[p].to(torch::kFloat64), x[j][i]);
    }
  }
  return acc;
}

nlohmann::json reconstruction_record(const ReconstructedEma& out, const std::vector<SnapshotInput>& inputs,
                                     const std::vector<double>& x, const PhemaReconstruction& r) {
  nlohmann::json j = {{"sigma_rel", out.sigma_rel}, {"gamma", out.gamma}, {"step", out.step},
                      {"checkpoint", out.checkpoint}, {"snapshot_dir", r.snapshot_dir}};
  record_file(j, "template", r.checkpoint);
  j["inputs"] = nlohmann::json::array();
  for (size_t i = 0; i < inputs.size(); ++i)
    j["inputs"].push_back({{"snapshot", inputs[i].path}, {"step", inputs[i].step}, {"profile", inputs[i].index},
                           {"sigma_rel", inputs[i].sigma_rel}, {"gamma", inputs[i].gamma},
                           {"xxh3", hash_text(inputs[i].hash)}, {"coefficient", x[i]}});
  record_software(j, torch::kCPU);
  return j;
}

}  // namespace

std::string reconstruction_name(double sigma_rel, int64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "ema_%s_%09lld.pt", sigma_text(sigma_rel).c_str(), static_cast<long long>(step));
  return buf;
}

std::string phema_checkpoint_of_run(const std::string& run_dir, int64_t step) {
  const auto ckpts = list_checkpoints(run_dir + "/checkpoints");
  const auto snaps = list_phema_snapshots(run_dir + "/phema");
  if (snaps.empty())
    throw InputError("--run-dir " + run_dir + ": phema/ holds no post-hoc EMA snapshots; a run writes them with "
                     "train.ema_snapshot_every > 0");
  for (auto it = ckpts.rbegin(); it != ckpts.rend(); ++it) {
    if (step >= 0 && it->first != step) continue;
    if (std::any_of(snaps.begin(), snaps.end(), [&](const auto& s) { return s.first == it->first; }))
      return it->second;
  }
  throw InputError("--run-dir " + run_dir + ": no step " + (step >= 0 ? std::to_string(step) + " " : "") +
                   "with both a checkpoint and a post-hoc EMA snapshot (checkpoints at steps " + steps_listed(ckpts) +
                   "; snapshots at steps " + steps_listed(snaps) + ")");
}

std::vector<ReconstructedEma> reconstruct_phema(const PhemaReconstruction& r) {
  check_target_lengths(r.sigma_rels);
  CpuGeneratorKept kept;  // the networks below are containers: their initial draws must not move the caller's stream
  CheckpointReader ck(r.checkpoint, torch::kCPU);
  const int64_t step = ck.step();

  // Every output is checked before any work.
  prepare_output_dir(r.out_dir, r.out_option);
  std::vector<ReconstructedEma> outs;
  for (double s : r.sigma_rels) {
    ReconstructedEma o;
    o.sigma_rel = s;
    o.gamma = phema::sigma_rel_to_gamma(s);
    o.step = step;
    o.checkpoint = r.out_dir + "/" + reconstruction_name(s, step);
    o.record = o.checkpoint.substr(0, o.checkpoint.size() - 3) + ".json";
    for (const auto& f : {o.checkpoint, o.record})
      if (!r.overwrite && fs::exists(f))
        throw InputError(f + ": exists already; pass --overwrite to replace it, or choose another " + r.out_option);
    outs.push_back(o);
  }

  const auto inputs = gather_inputs(r, step);
  std::vector<phema::Profile> profiles;
  for (const auto& in : inputs) profiles.push_back({static_cast<double>(in.step), in.gamma});
  std::vector<std::vector<double>> x;
  for (auto& o : outs) {
    try {
      x.push_back(phema::solve_posthoc_coefficients(profiles, {static_cast<double>(step), o.gamma}));
    } catch (const std::invalid_argument& e) {
      throw InputError(r.snapshot_dir + ": " + e.what());
    }
    o.inputs = static_cast<int64_t>(inputs.size());
  }

  auto model = make_velocity_field(ck.config().model, ck.config().path, ck.sample_shape());
  auto ema = make_velocity_field(ck.config().model, ck.config().path, ck.sample_shape());
  ck.load_module("model", *model);
  ck.load_module("ema", *ema);  // its buffers stay: a profile averages parameters only
  auto acc = combine_profiles(inputs, x, *ema);
  ck.load_module("ema", *ema);
  // The output carries the template's random state, so its bytes depend on nothing but the inputs.
  ck.restore_rng(torch::kCPU);
  torch::NoGradGuard ng;
  for (size_t j = 0; j < outs.size(); ++j) {
    auto params = ema->parameters();
    for (size_t p = 0; p < params.size(); ++p) params[p].copy_(acc[j][p]);
    save_checkpoint(outs[j].checkpoint, {&ck.config(), step, ck.sample_shape(), ck.data(), model.get(), ema.get(),
                                         nullptr, nullptr, ck.class_names(), torch::kCPU});
    write_file_atomic(outs[j].record, reconstruction_record(outs[j], inputs, x[j], r).dump(2) + "\n");
    spdlog::info("ema: sigma_rel {} (gamma {:.3f}) at step {} from {} snapshotted profiles -> {}", outs[j].sigma_rel,
                 outs[j].gamma, step, inputs.size(), outs[j].checkpoint);
  }
  return outs;
}

}  // namespace fm
