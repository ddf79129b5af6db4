#pragma once
// What every harness shares. A reader's contract is "a result, or fm::InputError with one line naming the file":
// any other exception that escapes (c10::Error, std::out_of_range, a JSON library error) would be exit 1 in `fm` and
// is reported here as a crash, like a sanitizer finding, a signal or a hang (libFuzzer's -timeout).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <typeinfo>

#include <ATen/Parallel.h>
#include <stdlib.h>
#include <unistd.h>

#include "util/error.h"

namespace fm::fuzz {

// A private directory for this process's scratch files (the readers take paths), emptied of them at exit.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/fm_fuzz_XXXXXX";
    if (!::mkdtemp(pattern.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
    return pattern;
  }();
  return dir;
}

// Writes `data` to scratch_dir()/name and returns its path. Not std::filesystem: see tests/test_util.h.
inline std::string write_scratch(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = scratch_dir() + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || (size && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::abort();
  }
  static bool registered = false;
  static std::string last;
  last = path;
  if (!registered) {
    registered = true;
    std::atexit([] {
      ::unlink(last.c_str());
      ::rmdir(scratch_dir().c_str());
    });
  }
  return path;
}

// Runs `read`; InputError is the expected way to refuse bad bytes, everything else aborts with its type and message.
template <class F>
int run_reader(F&& read) {
  try {
    read();
  } catch (const fm::InputError&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nfm fuzz: a reader let through %s: %s\n", typeid(e).name(), e.what());
    std::abort();
  }
  return 0;
}

// One intra-op thread: the harness is one process per core, and the readers' parallel loops must work either way.
inline void init_torch() { at::set_num_threads(1); }

}  // namespace fm::fuzz
