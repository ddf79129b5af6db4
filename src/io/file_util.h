#pragma once
// Small file helpers shared by the writers: atomic replacement so that a crash never leaves a half-written file
// under the final name, and whole-file reads with clear errors.
#include <string>
#include <vector>

namespace fm {

// Writes `bytes` to `path` atomically: a temporary file beside it, flushed and fsynced, then renamed over `path`.
void write_file_atomic(const std::string& path, const void* data, size_t size);
inline void write_file_atomic(const std::string& path, const std::string& bytes) {
  write_file_atomic(path, bytes.data(), bytes.size());
}

// Creates a directory and its parents; throws naming the path on failure.
void make_dirs(const std::string& path);

}  // namespace fm
