#pragma once
// Small file helpers shared by the writers: atomic replacement so that a crash never leaves a half-written file
// under the final name, and whole-file reads with clear errors.
#include <string>
#include <vector>

namespace fm {

// A file written under a temporary name beside `path` and moved into place by commit(): the data is fsynced, renamed
// over `path`, then the directory is fsynced, so once commit() returns the new file survives a power cut, and until
// then `path` is untouched. A failing write (disk full, read-only) throws one line naming `path` and the cause; an
// uncommitted temporary file is removed by the destructor.
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t size);
  void commit();
  const std::string& path() const { return path_; }

 private:
  void fail(const std::string& what, int err);
  std::string path_, tmp_;
  int fd_ = -1;
};

// Writes `bytes` to `path` atomically (see AtomicFile).
void write_file_atomic(const std::string& path, const void* data, size_t size);
inline void write_file_atomic(const std::string& path, const std::string& bytes) {
  write_file_atomic(path, bytes.data(), bytes.size());
}

// Creates a directory and its parents; throws naming the path on failure.
void make_dirs(const std::string& path);

// Every command checks its output files before the work starts, with one rule: the parent directories are created
// (as `fm train --out` and `fm sample --out` create theirs) and must be writable, and the path must not be a
// directory. Throws InputError "OPTION PATH: why" otherwise, so a long run never fails at its last write.
void prepare_output_file(const std::string& path, const std::string& option);

// The same rule for an output directory: created with its parents, and it must be a writable directory; InputError
// "OPTION PATH: why" otherwise.
void prepare_output_dir(const std::string& path, const std::string& option);

// A cheap fingerprint of a file's bytes (zlib's CRC-32 as 8 hex digits) for provenance records.
std::string file_crc32(const std::string& path);

}  // namespace fm
