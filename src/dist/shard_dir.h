#pragma once
// The finished batches of a long run over items, kept as they finish so that a stopped or preempted run continues
// where it was: one .npz per batch (shard_<first>_<count>.npz, its outputs by name) in a directory every rank sees,
// beside settings.json, the settings that determine the outputs. A resume must have the same settings; whatever
// differs is refused naming the option it comes from.
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "dist/rank_batches.h"
#include "dist/world.h"

namespace fm::dist {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// InputError unless every key of `now` but those in `unchecked` has the same value in `before` (the settings an earlier
// run stored in `file`): the message names the option the key comes from (`option_of`), both values and `file`.
void check_same_settings(const nlohmann::json& before, const nlohmann::json& now,
                         const std::vector<std::string>& unchecked,
                         const std::function<std::string(const std::string&)>& option_of, const std::string& file);

class ShardDir {
 public:
  explicit ShardDir(std::string dir) : dir_(std::move(dir)) {}
  const std::string& dir() const { return dir_; }

  // Whether the directory holds finished batches (a settings.json alone, from a run that failed before its first
  // batch, holds none).
  bool has_shards() const;
  // Checked before any work: shards of an earlier run are continued only with `resume` and replaced only with
  // `overwrite` (InputError naming both options otherwise); the directory is created and must be writable.
  void check_usable(bool resume, bool overwrite) const;

  // Makes the directory ready, on every rank. With `resume` and shards present, the stored settings must equal
  // `settings` but for the keys in `unchecked` (paths of the same bytes, display names), or InputError names the
  // option (`option_of(key)`) whose value differs. Otherwise rank 0 removes any earlier shards and stores `settings`.
  // Returns once every rank has judged the directory as it was before any rank wrote to it.
  void prepare(bool resume, const nlohmann::json& settings, const std::vector<std::string>& unchecked,
               const std::function<std::string(const std::string&)>& option_of, World& world);

  // The outputs of batch `b` when resuming and a finished shard holds them.
  std::optional<NamedTensors> load(const ItemRange& b) const;
  void save(const ItemRange& b, const NamedTensors& outputs) const;
  // Removes the shards and settings.json, then the directory.
  void remove() const;

 private:
  std::string path_of(const ItemRange& b) const;
  std::string dir_;
  bool resuming_ = false;
};

}  // namespace fm::dist
