#pragma once
// Post-hoc EMA snapshots (checkpoint/phema_math.h): the power-function EMA profiles of a run at one step, saved in
// RUN/phema/phema_<step>.pt. A snapshot is sealed and written atomically like a checkpoint (save_sealed_archive) and
// holds "fm_phema" (its format), "step", "sigma_rels" (float64, one per profile) and "profile_<i>", the weights of
// profile i as a module archive of the run's network. A training checkpoint stores the same profiles under "phema",
// in the same layout without the step (write_profiles / read_profile).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "checkpoint/checkpoint.h"

namespace fm {

// Snapshot files in a run's phema/ directory are named phema_<step>.pt.
std::string phema_snapshot_name(int64_t step);
// The snapshots in `dir` as (step, path), oldest first (none when `dir` does not exist).
std::vector<std::pair<int64_t, std::string>> list_phema_snapshots(const std::string& dir);
// Deletes all but the newest `keep` snapshots in `dir` (keep 0: deletes none).
void prune_phema_snapshots(const std::string& dir, int64_t keep);
// Moves the snapshots after `step` into a fresh `dir`/<why>_<UTC time>/, where nothing lists them again: a run that
// continues from step `step` (0: a fresh run) would never have written them. Returns their new paths.
std::vector<std::string> move_aside_phema_snapshots_after(const std::string& dir, int64_t step,
                                                          const std::string& why = "abandoned");

// The profiles' part of an archive: "sigma_rels" and "profile_<i>" for each module.
void write_profiles(torch::serialize::OutputArchive& ar, const std::vector<double>& sigma_rels,
                    const std::vector<torch::nn::Module*>& profiles);
// "sigma_rels" of an archive written by write_profiles; throws c10::Error when malformed.
std::vector<double> read_sigma_rels(torch::serialize::InputArchive& ar);
// Loads profile i of such an archive into `m`; false when it has no profile i, InputError when its tensors do not have
// the shapes of m's (c10::Error when they are missing).
bool read_profile(torch::serialize::InputArchive& ar, size_t i, torch::nn::Module& m);

// Writes the snapshot of `profiles` (ArchiveState writing them with write_profiles) at `step` to `path`.
void save_phema_snapshot(const std::string& path, int64_t step, const ArchiveState& profiles);

// A snapshot read whole and verified on the CPU (CorruptCheckpoint when the seal fails, InputError naming the file
// when it is not a snapshot).
class PhemaSnapshotReader {
 public:
  explicit PhemaSnapshotReader(const std::string& path);
  const std::string& path() const { return path_; }
  int64_t step() const { return step_; }
  const std::vector<double>& sigma_rels() const { return sigma_rels_; }
  uint64_t hash() const { return hash_; }  // the seal's hash of the file's payload: a fingerprint
  // Loads profile i into `m` (a network of the run's config); InputError naming the file when it does not fit.
  void load_profile(size_t i, torch::nn::Module& m);

 private:
  std::string path_;
  torch::serialize::InputArchive ar_;
  int64_t step_ = 0;
  std::vector<double> sigma_rels_;
  uint64_t hash_ = 0;
};

}  // namespace fm
