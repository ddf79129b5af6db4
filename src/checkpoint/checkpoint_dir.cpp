#include "checkpoint/checkpoint_dir.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <regex>
#include <stdexcept>

namespace fm {
namespace fs = std::filesystem;

std::string step_file_name(const std::string& prefix, int64_t step) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "_%09lld.pt", static_cast<long long>(step));
  return prefix + buf;
}

std::vector<std::pair<int64_t, std::string>> list_step_files(const std::string& dir, const std::string& prefix) {
  std::vector<std::pair<int64_t, std::string>> out;
  if (!fs::is_directory(dir)) return out;
  const std::regex re(prefix + R"(_(\d{1,18})\.pt)");
  for (const auto& e : fs::directory_iterator(dir)) {
    std::smatch m;
    std::string name = e.path().filename().string();
    if (e.is_regular_file() && std::regex_match(name, m, re)) out.emplace_back(std::stoll(m[1]), e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void prune_step_files(const std::string& dir, const std::string& prefix, int64_t keep) {
  auto all = list_step_files(dir, prefix);
  for (size_t i = 0; i + static_cast<size_t>(std::max<int64_t>(keep, 0)) < all.size(); ++i) fs::remove(all[i].second);
}

std::vector<std::string> move_aside(const std::string& dir, const std::vector<std::string>& files,
                                    const std::string& why) {
  if (files.empty()) return {};
  char stamp[32];
  std::time_t now = std::time(nullptr);
  std::tm utc{};
  ::gmtime_r(&now, &utc);
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &utc);
  std::string aside = dir + "/" + why + "_" + stamp;
  for (int i = 2; fs::exists(aside); ++i) aside = dir + "/" + why + "_" + stamp + "_" + std::to_string(i);
  std::error_code ec;
  fs::create_directory(aside, ec);
  if (ec) throw std::runtime_error(aside + ": cannot create directory (" + ec.message() + ")");
  std::vector<std::string> moved;
  for (const auto& p : files) {
    std::string to = aside + "/" + fs::path(p).filename().string();
    if (std::rename(p.c_str(), to.c_str()) != 0)
      throw std::runtime_error(p + ": cannot move aside to " + aside + " (" + std::strerror(errno) + ")");
    moved.push_back(to);
  }
  return moved;
}

std::string checkpoint_name(int64_t step) { return step_file_name("ckpt", step); }

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& dir) {
  return list_step_files(dir, "ckpt");
}

std::optional<std::string> latest_checkpoint(const std::string& dir) {
  auto all = list_checkpoints(dir);
  if (all.empty()) return std::nullopt;
  return all.back().second;
}

void prune_checkpoints(const std::string& dir, int64_t keep) { prune_step_files(dir, "ckpt", keep); }

namespace {
bool same_file(const std::string& a, const std::string& b) {
  struct stat sa{}, sb{};
  return ::stat(a.c_str(), &sa) == 0 && ::stat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}
}  // namespace

std::vector<std::string> move_aside_after(const std::string& dir, int64_t step, const std::string& resumed,
                                          const std::string& why) {
  std::vector<std::string> doomed;
  for (const auto& [s, p] : list_checkpoints(dir))
    if (s > step || (s == step && !same_file(p, resumed))) doomed.push_back(p);
  return move_aside(dir, doomed, why);
}

}  // namespace fm
