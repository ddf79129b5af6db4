#include "checkpoint/phema_snapshot.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <regex>
#include <stdexcept>

#include "checkpoint/checkpoint_dir.h"
#include "util/error.h"

namespace fm {
namespace fs = std::filesystem;

namespace {
constexpr int64_t kSnapshotFormat = 1;

std::string profile_key(size_t i) { return "profile_" + std::to_string(i); }

}  // namespace

std::string phema_snapshot_name(int64_t step) { return step_file_name("phema", step); }

std::vector<std::pair<int64_t, std::string>> list_phema_snapshots(const std::string& dir) {
  return list_step_files(dir, "phema");
}

void prune_phema_snapshots(const std::string& dir, int64_t keep) {
  if (keep > 0) prune_step_files(dir, "phema", keep);
}

std::vector<std::string> move_aside_phema_snapshots_after(const std::string& dir, int64_t step,
                                                          const std::string& why) {
  std::vector<std::string> doomed;
  for (const auto& [s, p] : list_phema_snapshots(dir))
    if (s > step) doomed.push_back(p);
  return move_aside(dir, doomed, why);
}

void write_profiles(torch::serialize::OutputArchive& ar, const std::vector<double>& sigma_rels,
                    const std::vector<torch::nn::Module*>& profiles) {
  ar.write("sigma_rels", torch::tensor(sigma_rels, torch::kFloat64));
  for (size_t i = 0; i < profiles.size(); ++i) {
    torch::serialize::OutputArchive sub;
    profiles[i]->save(sub);
    ar.write(profile_key(i), sub);
  }
}

std::vector<double> read_sigma_rels(torch::serialize::InputArchive& ar) {
  torch::Tensor s;
  if (!ar.try_read("sigma_rels", s)) return {};
  s = s.to(torch::kCPU, torch::kFloat64).contiguous().view(-1);
  return std::vector<double>(s.data_ptr<double>(), s.data_ptr<double>() + s.numel());
}

bool read_profile(torch::serialize::InputArchive& ar, size_t i, torch::nn::Module& m) {
  torch::serialize::InputArchive sub;
  if (!ar.try_read(profile_key(i), sub)) return false;
  // Module::load replaces each tensor by the stored one whatever its shape: the shapes are compared here.
  std::vector<std::vector<int64_t>> shapes;
  for (const auto& p : m.parameters()) shapes.push_back(p.sizes().vec());
  m.load(sub);
  const auto params = m.parameters();
  for (size_t j = 0; j < params.size(); ++j)
    if (params[j].sizes().vec() != shapes[j])
      throw InputError(profile_key(i) + " does not fit the network: parameter " + std::to_string(j) + " has shape " +
                       c10::str(params[j].sizes()) + ", the network's " + c10::str(c10::IntArrayRef(shapes[j])));
  return true;
}

void save_phema_snapshot(const std::string& path, int64_t step, const ArchiveState& profiles) {
  torch::serialize::OutputArchive ar;
  ar.write("fm_phema", torch::tensor(kSnapshotFormat));
  ar.write("step", torch::tensor(step));
  profiles.save(ar);
  save_sealed_archive(path, ar);
}

PhemaSnapshotReader::PhemaSnapshotReader(const std::string& path) : path_(path) {
  hash_ = load_sealed_archive(path, torch::kCPU, ar_);
  try {
    torch::Tensor format, step;
    if (!ar_.try_read("fm_phema", format) || !ar_.try_read("step", step))
      throw file_error(path, "not an fm post-hoc EMA snapshot (missing fm_phema or step)");
    if (format.item<int64_t>() != kSnapshotFormat)
      throw file_error(path, "snapshot format " + std::to_string(format.item<int64_t>()) + ", this fm reads " +
                                 std::to_string(kSnapshotFormat));
    step_ = step.item<int64_t>();
    sigma_rels_ = read_sigma_rels(ar_);
  } catch (const c10::Error& e) {
    throw file_error(path, "not an fm post-hoc EMA snapshot (a field is malformed: " +
                               std::string(e.what_without_backtrace()).substr(0, 200) + ")");
  }
  if (step_ <= 0 || sigma_rels_.empty())
    throw file_error(path, "a post-hoc EMA snapshot needs a step > 0 and at least one profile");
}

void PhemaSnapshotReader::load_profile(size_t i, torch::nn::Module& m) {
  try {
    if (!read_profile(ar_, i, m)) throw file_error(path_, "snapshot has no " + profile_key(i));
  } catch (const c10::Error& e) {
    throw file_error(path_, profile_key(i) + " does not match the network of the run's checkpoint");
  } catch (const InputError& e) {
    if (std::string(e.what()).rfind(path_, 0) == 0) throw;
    throw file_error(path_, e.what());
  }
}

}  // namespace fm
