#pragma once
// Helpers shared by the tests: temporary directories and running the fm binary or the venv's Python.
#include <ftw.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

namespace fm::test {

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
inline std::string python() { return FM_PYTHON_EXE; }
inline std::string source_dir() { return FM_SOURCE_DIR; }
inline std::string ref_script(const std::string& name) { return source_dir() + "/tests/ref/" + name; }

}  // namespace fm::test
