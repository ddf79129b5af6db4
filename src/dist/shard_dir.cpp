#include "dist/shard_dir.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "io/file_util.h"
#include "io/npy.h"
#include "util/error.h"

namespace fm::dist {
namespace fs = std::filesystem;

namespace {

const char* kSettings = "settings.json";

bool is_shard_file(const fs::path& p) {
  return p.filename().string().rfind("shard_", 0) == 0 && p.extension() == ".npz";
}

}  // namespace

void check_same_settings(const nlohmann::json& before, const nlohmann::json& now,
                         const std::vector<std::string>& unchecked,
                         const std::function<std::string(const std::string&)>& option_of, const std::string& file) {
  for (const auto& [key, value] : now.items()) {
    if (std::find(unchecked.begin(), unchecked.end(), key) != unchecked.end()) continue;
    if (!before.contains(key) || before[key] != value)
      throw InputError(option_of(key) + ": --resume continues a run started with " + key + " = " +
                       (before.contains(key) ? before[key].dump() : "(not recorded)") + ", this one has " +
                       value.dump() + " (" + file + "); resume with the same settings or start afresh with "
                       "--overwrite");
  }
}

std::string ShardDir::path_of(const ItemRange& b) const {
  char buf[64];
  std::snprintf(buf, sizeof buf, "/shard_%09lld_%06lld.npz", static_cast<long long>(b.first),
                static_cast<long long>(b.count));
  return dir_ + buf;
}

bool ShardDir::has_shards() const {
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) return false;
  for (const auto& e : fs::directory_iterator(dir_, ec))
    if (is_shard_file(e.path())) return true;
  return false;
}

void ShardDir::check_usable(bool resume, bool overwrite) const {
  if (resume && overwrite) throw InputError("--resume and --overwrite: choose one");
  if (has_shards() && !resume && !overwrite)
    throw InputError(dir_ + ": holds shards of an earlier run; pass --resume to continue it, --overwrite to start "
                     "afresh, or choose another --out");
  prepare_output_dir(dir_, "--out");
}

void ShardDir::prepare(bool resume, const nlohmann::json& settings, const std::vector<std::string>& unchecked,
                       const std::function<std::string(const std::string&)>& option_of, World& world) {
  resuming_ = resume && has_shards();
  const std::string file = dir_ + "/" + kSettings;
  if (resuming_) {
    std::ifstream f(file);
    if (!f)
      throw InputError(file + ": missing, so the settings of the shards beside it cannot be checked; start afresh "
                       "with --overwrite");
    nlohmann::json before;
    try {
      f >> before;
    } catch (const nlohmann::json::exception&) {
      throw file_error(file, "not valid JSON; start afresh with --overwrite");
    }
    check_same_settings(before, settings, unchecked, option_of, file);
  } else if (world.is_main()) {
    remove();
    make_dirs(dir_);
    write_file_atomic(file, settings.dump(2) + "\n");
  }
  world.barrier();
}

std::optional<NamedTensors> ShardDir::load(const ItemRange& b) const {
  const std::string path = path_of(b);
  if (!resuming_ || !fs::exists(path)) return std::nullopt;
  auto arrays = read_npz(path);
  NamedTensors out;
  for (auto& [name, t] : arrays) out.emplace_back(name, t);
  return out;
}

void ShardDir::save(const ItemRange& b, const NamedTensors& outputs) const {
  write_npz(path_of(b), outputs);
}

void ShardDir::remove() const {
  std::error_code ec;
  std::vector<fs::path> doomed;
  for (const auto& e : fs::directory_iterator(dir_, ec))
    if (is_shard_file(e.path()) || e.path().filename() == kSettings) doomed.push_back(e.path());
  for (const auto& p : doomed) std::remove(p.c_str());
  ::rmdir(dir_.c_str());
}

}  // namespace fm::dist
