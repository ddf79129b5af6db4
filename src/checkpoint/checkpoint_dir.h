#pragma once
// The checkpoints/ directory of a run: files named ckpt_<step>.pt, the newest K kept, and the branches a resume from
// an older checkpoint abandons moved aside into abandoned_<time>/ subdirectories, which nothing here lists again.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace fm {

// Files of a step, named <prefix>_<step>.pt with the step in at least nine digits: checkpoints (prefix ckpt) and
// post-hoc EMA snapshots (phema, checkpoint/phema_snapshot.h).
std::string step_file_name(const std::string& prefix, int64_t step);
// The files <prefix>_<step>.pt in `dir` as (step, path), oldest first.
std::vector<std::pair<int64_t, std::string>> list_step_files(const std::string& dir, const std::string& prefix);
// Deletes all but the newest `keep` of them.
void prune_step_files(const std::string& dir, const std::string& prefix, int64_t keep);
// Moves `files` (in `dir`) into a fresh `dir`/<why>_<UTC time>/ and returns their new paths (none: empty, no
// directory made).
std::vector<std::string> move_aside(const std::string& dir, const std::vector<std::string>& files,
                                    const std::string& why);

// Checkpoint files in a run's checkpoint directory are named ckpt_<step>.pt.
std::string checkpoint_name(int64_t step);
// The checkpoints in `dir` as (step, path), oldest first.
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& dir);
// The newest checkpoint in `dir` (by step), if any.
std::optional<std::string> latest_checkpoint(const std::string& dir);
// Deletes all but the newest `keep` checkpoints in `dir`.
void prune_checkpoints(const std::string& dir, int64_t keep);
// Moves the checkpoints in `dir` that a run continuing from `resumed` (at `step`) would never have written, those
// after `step` and any other file at `step`, into a fresh `dir`/<why>_<UTC time>/ (why: abandoned, diverged), so that
// a later `--resume auto` cannot jump back to them. Returns the moved files' new paths (none moved: empty, no
// directory made).
std::vector<std::string> move_aside_after(const std::string& dir, int64_t step, const std::string& resumed,
                                          const std::string& why = "abandoned");

}  // namespace fm
