#include "io/file_util.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <vector>
#include <unistd.h>

#include <zlib.h>

#include "util/error.h"

namespace fm {

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw std::runtime_error(path + ": cannot write (" + std::strerror(errno) + ")");
  bool ok = std::fwrite(data, 1, size, f) == size && std::fflush(f) == 0 && ::fsync(::fileno(f)) == 0;
  int err = errno;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": write failed (" + std::strerror(err) + ")");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": cannot rename temporary file into place (" + std::strerror(err) + ")");
  }
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
