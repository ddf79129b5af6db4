#include "io/file_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include <zlib.h>

#include "util/error.h"

namespace fm {

AtomicFile::AtomicFile(const std::string& path) : path_(path), tmp_(path + ".tmp." + std::to_string(::getpid())) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw std::runtime_error(path_ + ": cannot write (" + std::strerror(errno) + ")");
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicFile::fail(const std::string& what, int err) {
  ::close(fd_);
  fd_ = -1;
  ::unlink(tmp_.c_str());
  throw std::runtime_error(path_ + ": " + what + " (" + std::strerror(err) + ")");
}

void AtomicFile::write(const void* data, size_t size) {
  if (fd_ < 0) throw std::logic_error(path_ + ": write after commit or failure");
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd_, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("write failed", n < 0 ? errno : ENOSPC);
    p += n;
    size -= static_cast<size_t>(n);
  }
}

void AtomicFile::commit() {
  if (fd_ < 0) throw std::logic_error(path_ + ": commit after commit or failure");
  // Delayed allocation (tmpfs, ext4, NFS) can report a full disk only here, at fsync or close.
  if (::fsync(fd_) != 0) fail("write failed", errno);
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp_.c_str());
    throw std::runtime_error(path_ + ": write failed (" + std::strerror(err) + ")");
  }
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp_.c_str());
    throw std::runtime_error(path_ + ": cannot rename temporary file into place (" + std::strerror(err) + ")");
  }
  // The rename lives in the directory: without this fsync a power cut can bring back the old entry (or none).
  std::string dir = std::filesystem::path(path_).parent_path().string();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) throw std::runtime_error(dir + ": cannot open directory to sync it (" + std::strerror(errno) + ")");
  int rc = ::fsync(dfd), err = errno;
  ::close(dfd);
  // Some file systems cannot sync a directory at all (EINVAL); the rename is as durable as they make it.
  if (rc != 0 && err != EINVAL) throw std::runtime_error(dir + ": cannot sync directory (" + std::strerror(err) + ")");
}

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  AtomicFile f(path);
  f.write(data, size);
  f.commit();
}

void make_dirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) throw std::runtime_error(path + ": cannot create directory (" + ec.message() + ")");
}

void prepare_output_file(const std::string& path, const std::string& option) {
  namespace fs = std::filesystem;
  const std::string where = option + " " + path;
  if (path.empty()) throw InputError(option + ": empty path");
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw InputError(where + ": is a directory, expected a file name");
  fs::path parent = fs::path(path).parent_path();
  if (parent.empty()) parent = ".";
  fs::create_directories(parent, ec);
  if (ec) throw InputError(where + ": cannot create directory " + parent.string() + " (" + ec.message() + ")");
  if (!fs::is_directory(parent, ec)) throw InputError(where + ": " + parent.string() + " is not a directory");
  if (::access(parent.c_str(), W_OK) != 0)
    throw InputError(where + ": directory " + parent.string() + " is not writable (" + std::strerror(errno) + ")");
  if (fs::exists(path, ec) && ::access(path.c_str(), W_OK) != 0)
    throw InputError(where + ": exists and is not writable (" + std::strerror(errno) + ")");
}

void prepare_output_dir(const std::string& path, const std::string& option) {
  namespace fs = std::filesystem;
  const std::string where = option + " " + path;
  if (path.empty()) throw InputError(option + ": empty path");
  std::error_code ec;
  if (fs::exists(path, ec) && !fs::is_directory(path, ec)) throw InputError(where + ": exists and is not a directory");
  fs::create_directories(path, ec);
  if (ec) throw InputError(where + ": cannot create directory (" + ec.message() + ")");
  if (::access(path.c_str(), W_OK) != 0)
    throw InputError(where + ": directory is not writable (" + std::strerror(errno) + ")");
}

std::string file_crc32(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw file_error(path, std::string("cannot open (") + std::strerror(errno) + ")");
  std::vector<unsigned char> buf(1 << 20);
  uLong crc = crc32(0L, Z_NULL, 0);
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) crc = crc32(crc, buf.data(), static_cast<uInt>(n));
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) throw file_error(path, "read error");
  char hex[16];
  std::snprintf(hex, sizeof hex, "%08lx", static_cast<unsigned long>(crc));
  return hex;
}

}  // namespace fm
