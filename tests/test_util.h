#pragma once
// Helpers shared by the tests: the device they run on, temporary directories and running the fm binary or the venv's
// Python.
#include <ftw.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "config/config.h"

namespace fm::test {

// The device the suite runs on: FM_TEST_DEVICE=cuda (or cuda:N) runs every test that makes sense on a GPU there;
// unset or "cpu", everything runs on the CPU as before. Tests build their models and tensors with device() and pass
// device_spec() to configs and to the CLI's --device.
inline const std::string& device_spec() {
  static const std::string spec = [] {
    const char* e = std::getenv("FM_TEST_DEVICE");
    return std::string(e && *e ? e : "cpu");
  }();
  return spec;
}
// "cuda" means cuda:0, as fm's --device takes it, so that it compares equal to a tensor's device.
inline torch::Device device() {
  torch::Device d(device_spec());
  return d.is_cuda() && !d.has_index() ? torch::Device(torch::kCUDA, 0) : d;
}
inline bool on_cuda() { return device().is_cuda(); }
// Float32 (or `dtype`) tensors on the test device.
inline torch::TensorOptions opts(torch::Dtype dtype = torch::kFloat32) {
  return torch::TensorOptions().dtype(dtype).device(device());
}
// " --device SPEC" for fm command lines.
inline std::string device_flag() { return " --device " + device_spec(); }

// For the tests that only mean something on the CPU (bitwise reproducibility, comparisons with a Python reference run
// on the CPU): skips, saying why, when the suite runs on CUDA.
#define FM_SKIP_ON_CUDA(why)                                                  \
  do {                                                                        \
    if (::fm::test::on_cuda()) GTEST_SKIP() << "CPU only on purpose: " << why; \
  } while (0)

// Deletes a directory tree. Not std::filesystem::remove_all: the torch wheel's libtorch.so exports its own copy of
// it, built against a newer libstdc++, and calls bind to that copy and crash.
inline void remove_tree(const std::string& path) {
  ::nftw(path.c_str(), [](const char* f, const struct stat*, int, struct FTW*) { return ::remove(f); }, 16,
         FTW_DEPTH | FTW_PHYS);
}

// A fresh empty directory under the system temp dir, removed when the object goes.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "fm") {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            (tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    remove_tree(path_.string());
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { remove_tree(path_.string()); }
  std::string str() const { return path_.string(); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// How many times `needle` occurs in `text`.
inline size_t occurrences(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = 0; (at = text.find(needle, at)) != std::string::npos; at += needle.size()) ++n;
  return n;
}

struct RunResult {
  int code;
  std::string output;  // stdout and stderr together
};

// Runs a shell command line as given, capturing its stdout and exit code.
inline RunResult run_stdout(const std::string& cmd) {
  RunResult r{-1, ""};
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// Runs a shell command line, capturing its output (stdout and stderr together) and exit code.
inline RunResult run(const std::string& cmd) { return run_stdout(cmd + " 2>&1"); }

struct SplitRunResult {
  int code;
  std::string out, err;
};

// Runs a shell command line with stdout and stderr captured apart (stderr through a file in `scratch_dir`).
inline SplitRunResult run_split(const std::string& cmd, const std::string& scratch_dir) {
  const std::string err_path = scratch_dir + "/stderr.txt";
  auto r = run_stdout(cmd + " 2>" + err_path);
  std::string err;
  if (FILE* f = std::fopen(err_path.c_str(), "rb")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) err.append(buf, n);
    std::fclose(f);
  }
  return {r.code, r.output, err};
}

inline std::string fm_binary() { return FM_BINARY; }

// `cmd` with its stdout and stderr apart, scratch files in `dir`.
inline SplitRunResult run(const std::string& cmd, const TempDir& dir) { return run_split(cmd, dir.str()); }

// Float64 on the test device.
inline const torch::TensorOptions f64 = opts(torch::kFloat64);

// The small U-Net the tests train: 32 channels, one residual block per level, no attention, one head.
inline UNetConfig tiny_unet(std::vector<int64_t> channel_mult = {1}) {
  UNetConfig u;
  u.model_channels = 32;
  u.num_res_blocks = 1;
  u.channel_mult = std::move(channel_mult);
  u.attention_resolutions = {};
  u.num_heads = 1;
  u.num_head_channels = -1;
  return u;
}
// A command line running the fm under test with `args`.
inline std::string fm_cmd(const std::string& args) { return fm_binary() + " " + args; }
inline std::string python() { return FM_PYTHON_EXE; }
inline std::string source_dir() { return FM_SOURCE_DIR; }
inline std::string ref_script(const std::string& name) { return source_dir() + "/tests/ref/" + name; }

}  // namespace fm::test
