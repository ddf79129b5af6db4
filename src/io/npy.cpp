#include "io/npy.h"

#include <cstring>
#include <fstream>
#include <regex>
#include <zlib.h>

#include "io/file_util.h"
#include "util/error.h"

namespace fm {
namespace {

struct DType {
  const char* descr;
  torch::ScalarType type;
  size_t size;
};
// Little-endian only: what numpy writes on every platform fm runs on.
const DType kDTypes[] = {{"|u1", torch::kUInt8, 1},   {"<u1", torch::kUInt8, 1},   {"|i1", torch::kInt8, 1},
                         {"|b1", torch::kBool, 1},    {"<i4", torch::kInt32, 4},   {"<i8", torch::kInt64, 8},
                         {"<f4", torch::kFloat32, 4}, {"<f8", torch::kFloat64, 8}, {"<f2", torch::kFloat16, 2}};

const DType* find_dtype(const std::string& d) {
  for (const auto& t : kDTypes)
    if (d == t.descr) return &t;
  return nullptr;
}
const DType* find_dtype(torch::ScalarType s) {
  for (const auto& t : kDTypes)
    if (t.type == s) return &t;
  return nullptr;
}

uint16_t le16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t le32(const uint8_t* p) { return static_cast<uint32_t>(le16(p)) | (static_cast<uint32_t>(le16(p + 2)) << 16); }
uint64_t le64(const uint8_t* p) { return static_cast<uint64_t>(le32(p)) | (static_cast<uint64_t>(le32(p + 4)) << 32); }
void put16(std::string& s, uint16_t v) {
  s.push_back(static_cast<char>(v & 0xff));
  s.push_back(static_cast<char>(v >> 8));
}
void put32(std::string& s, uint32_t v) {
  put16(s, static_cast<uint16_t>(v & 0xffff));
  put16(s, static_cast<uint16_t>(v >> 16));
}
void put64(std::string& s, uint64_t v) {
  put32(s, static_cast<uint32_t>(v & 0xffffffffu));
  put32(s, static_cast<uint32_t>(v >> 32));
}

}  // namespace

torch::Tensor parse_npy(const uint8_t* data, size_t size, const std::string& what) {
  auto bad = [&](const std::string& m) { return InputError(what + ": " + m); };
  if (size < 10 || std::memcmp(data, "\x93NUMPY", 6) != 0) throw bad("not a .npy array (bad magic)");
  const int major = data[6];
  size_t header_len, header_start;
  if (major == 1) {
    header_len = le16(data + 8), header_start = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) throw bad("truncated .npy header");
    header_len = le32(data + 8), header_start = 12;
  } else {
    throw bad("unsupported .npy format version " + std::to_string(major));
  }
  if (header_start + header_len > size) throw bad("truncated .npy header");
  std::string header(reinterpret_cast<const char*>(data + header_start), header_len);

  std::smatch m;
  if (!std::regex_search(header, m, std::regex(R"('descr'\s*:\s*'([^']*)')")))
    throw bad("malformed .npy header (no descr)");
  const DType* dt = find_dtype(m[1].str());
  if (!dt) throw bad("unsupported dtype '" + m[1].str() + "' (uint8, int8, bool, int32, int64, float16/32/64)");
  if (!std::regex_search(header, m, std::regex(R"('fortran_order'\s*:\s*(True|False))")))
    throw bad("malformed .npy header (no fortran_order)");
  if (m[1].str() == "True") throw bad("Fortran-ordered arrays are not supported (save with np.ascontiguousarray)");
  if (!std::regex_search(header, m, std::regex(R"('shape'\s*:\s*\(([^)]*)\))")))
    throw bad("malformed .npy header (no shape)");
  std::vector<int64_t> shape;
  std::string dims = m[1].str();
  std::regex num(R"(\d+)");
  uint64_t count = 1;
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), num); it != std::sregex_iterator(); ++it) {
    int64_t d = std::stoll(it->str());
    shape.push_back(d);
    count *= static_cast<uint64_t>(d);
  }
  size_t offset = header_start + header_len;
  uint64_t nbytes = count * dt->size;
  if (size - offset != nbytes)
    throw bad("data holds " + std::to_string(size - offset) + " bytes but shape and dtype " + m[1].str() + " need " +
              std::to_string(nbytes));
  auto t = torch::empty(shape, torch::TensorOptions().dtype(dt->type));
  if (nbytes) std::memcpy(t.data_ptr(), data + offset, nbytes);
  return t;
}

std::string npy_bytes(const torch::Tensor& input) {
  auto t = input.detach().to(torch::kCPU).contiguous();
  const DType* dt = find_dtype(t.scalar_type());
  if (!dt) throw std::runtime_error("npy: cannot write dtype " + std::string(c10::toString(t.scalar_type())));
  std::string shape = "(";
  for (int64_t i = 0; i < t.dim(); ++i) shape += std::to_string(t.size(i)) + (t.dim() == 1 ? "," : (i + 1 < t.dim() ? ", " : ""));
  shape += ")";
  std::string dict = std::string("{'descr': '") + dt->descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad so that the data starts on a 64-byte boundary, as numpy does.
  size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict.push_back('\n');
  std::string out("\x93NUMPY\x01\x00", 8);
  put16(out, static_cast<uint16_t>(dict.size()));
  out += dict;
  out.append(static_cast<const char*>(t.data_ptr()), t.numel() * dt->size);
  return out;
}

torch::Tensor read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw file_error(path, "cannot open");
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return parse_npy(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path);
}

void write_npy(const std::string& path, const torch::Tensor& t) { write_file_atomic(path, npy_bytes(t)); }

// --- .npz: a zip archive of .npy members ---------------------------------------------------------------------------
namespace {

struct ZipEntry {
  std::string name;
  uint16_t method = 0;
  uint32_t crc = 0;
  uint64_t comp_size = 0, size = 0, local_offset = 0;
};

class ZipReader {
 public:
  explicit ZipReader(const std::string& path) : path_(path), f_(path, std::ios::binary) {
    if (!f_) throw file_error(path, "cannot open");
    f_.seekg(0, std::ios::end);
    file_size_ = static_cast<uint64_t>(f_.tellg());
    read_directory();
  }
  const std::vector<ZipEntry>& entries() const { return entries_; }

  std::vector<uint8_t> read(const ZipEntry& e) {
    auto lh = bytes(e.local_offset, 30, "local header of " + e.name);
    if (le32(lh.data()) != 0x04034b50) throw bad("bad local header for member " + e.name);
    uint64_t data_off = e.local_offset + 30 + le16(lh.data() + 26) + le16(lh.data() + 28);
    auto comp = bytes(data_off, e.comp_size, "member " + e.name);
    std::vector<uint8_t> out;
    if (e.method == 0) {
      if (e.comp_size != e.size) throw bad("member " + e.name + ": stored sizes disagree");
      out = std::move(comp);
    } else if (e.method == 8) {
      out.resize(e.size);
      z_stream zs{};
      if (inflateInit2(&zs, -15) != Z_OK) throw std::runtime_error("zlib: inflateInit2 failed");
      zs.next_in = comp.data();
      zs.avail_in = static_cast<uInt>(comp.size());
      zs.next_out = out.data();
      zs.avail_out = static_cast<uInt>(out.size());
      int rc = inflate(&zs, Z_FINISH);
      uint64_t produced = zs.total_out;
      inflateEnd(&zs);
      if (rc != Z_STREAM_END || produced != e.size) throw bad("member " + e.name + ": corrupt deflate data");
    } else {
      throw bad("member " + e.name + ": unsupported compression method " + std::to_string(e.method));
    }
    uint32_t crc = static_cast<uint32_t>(crc32_z(0L, out.data(), out.size()));
    if (crc != e.crc) throw bad("member " + e.name + ": CRC mismatch (file corrupt)");
    return out;
  }

  InputError bad(const std::string& m) const { return file_error(path_, m); }

 private:
  std::vector<uint8_t> bytes(uint64_t off, uint64_t n, const std::string& what) {
    if (off > file_size_ || n > file_size_ - off) throw bad("truncated (" + what + " runs past the end of the file)");
    std::vector<uint8_t> b(n);
    f_.seekg(static_cast<std::streamoff>(off));
    f_.read(reinterpret_cast<char*>(b.data()), static_cast<std::streamsize>(n));
    if (!f_) throw bad("read error in " + what);
    return b;
  }

  void read_directory() {
    // The end-of-central-directory record sits in the last 22 + 65535 bytes.
    uint64_t tail = std::min<uint64_t>(file_size_, 22 + 65535);
    if (file_size_ < 22) throw bad("not a zip/.npz file (too short)");
    auto t = bytes(file_size_ - tail, tail, "end of archive");
    int64_t pos = -1;
    for (int64_t i = static_cast<int64_t>(tail) - 22; i >= 0; --i)
      if (le32(&t[i]) == 0x06054b50) {
        pos = i;
        break;
      }
    if (pos < 0) throw bad("not a zip/.npz file (no end-of-central-directory record; truncated?)");
    const uint8_t* e = &t[pos];
    uint64_t count = le16(e + 10), cd_size = le32(e + 12), cd_off = le32(e + 16);
    uint64_t eocd_abs = file_size_ - tail + pos;
    if (count == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) {
      if (eocd_abs < 20) throw bad("zip64 locator missing");
      auto loc = bytes(eocd_abs - 20, 20, "zip64 locator");
      if (le32(loc.data()) != 0x07064b50) throw bad("zip64 locator missing");
      auto z = bytes(le64(loc.data() + 8), 56, "zip64 end record");
      if (le32(z.data()) != 0x06064b50) throw bad("bad zip64 end record");
      count = le64(z.data() + 32), cd_size = le64(z.data() + 40), cd_off = le64(z.data() + 48);
    }
    auto cd = bytes(cd_off, cd_size, "central directory");
    size_t p = 0;
    for (uint64_t i = 0; i < count; ++i) {
      if (p + 46 > cd.size() || le32(&cd[p]) != 0x02014b50) throw bad("corrupt central directory");
      ZipEntry en;
      en.method = le16(&cd[p + 10]);
      en.crc = le32(&cd[p + 16]);
      en.comp_size = le32(&cd[p + 20]);
      en.size = le32(&cd[p + 24]);
      size_t n = le16(&cd[p + 28]), x = le16(&cd[p + 30]), c = le16(&cd[p + 32]);
      en.local_offset = le32(&cd[p + 42]);
      if (p + 46 + n + x + c > cd.size()) throw bad("corrupt central directory");
      en.name.assign(reinterpret_cast<const char*>(&cd[p + 46]), n);
      // zip64 extra field: 64-bit values for whichever 32-bit fields are saturated, in this order.
      size_t q = p + 46 + n, qend = q + x;
      while (q + 4 <= qend) {
        uint16_t id = le16(&cd[q]), len = le16(&cd[q + 2]);
        if (q + 4 + len > qend) break;
        if (id == 0x0001) {
          size_t r = q + 4;
          auto take = [&](uint64_t& v) {
            if (v == 0xffffffffu && r + 8 <= q + 4 + len) v = le64(&cd[r]), r += 8;
          };
          take(en.size);
          take(en.comp_size);
          take(en.local_offset);
        }
        q += 4 + len;
      }
      entries_.push_back(en);
      p += 46 + n + x + c;
    }
  }

  std::string path_;
  std::ifstream f_;
  uint64_t file_size_ = 0;
  std::vector<ZipEntry> entries_;
};

std::string strip_npy(const std::string& n) {
  return n.size() > 4 && n.compare(n.size() - 4, 4, ".npy") == 0 ? n.substr(0, n.size() - 4) : n;
}

}  // namespace

std::vector<std::string> npz_keys(const std::string& path) {
  ZipReader z(path);
  std::vector<std::string> keys;
  for (const auto& e : z.entries()) keys.push_back(strip_npy(e.name));
  return keys;
}

std::map<std::string, torch::Tensor> read_npz(const std::string& path, const std::vector<std::string>& names) {
  ZipReader z(path);
  std::map<std::string, torch::Tensor> out;
  for (const auto& e : z.entries()) {
    std::string key = strip_npy(e.name);
    if (!names.empty() && std::find(names.begin(), names.end(), key) == names.end()) continue;
    auto bytes = z.read(e);
    out[key] = parse_npy(bytes.data(), bytes.size(), path + ": array '" + key + "'");
  }
  for (const auto& n : names)
    if (!out.count(n)) {
      std::string have;
      for (const auto& e : z.entries()) have += (have.empty() ? "" : ", ") + strip_npy(e.name);
      throw file_error(path, "no array '" + n + "' (has: " + (have.empty() ? "nothing" : have) + ")");
    }
  return out;
}

void write_npz(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& arrays) {
  std::string out, cd;
  const uint16_t kDosDate = (1 << 5) | 1;  // 1980-01-01: fixed, so that equal contents give equal files
  for (const auto& [name, tensor] : arrays) {
    std::string data = npy_bytes(tensor), fname = name + ".npy";
    uint32_t crc = static_cast<uint32_t>(crc32_z(0L, reinterpret_cast<const Bytef*>(data.data()), data.size()));
    uint64_t offset = out.size(), size = data.size();
    bool z64 = size >= 0xffffffffu || offset >= 0xffffffffu;
    std::string extra;
    if (z64) {
      put16(extra, 0x0001), put16(extra, 24), put64(extra, size), put64(extra, size), put64(extra, offset);
    }
    auto header = [&](bool central) {
      std::string h;
      put32(h, central ? 0x02014b50 : 0x04034b50);
      if (central) put16(h, z64 ? 45 : 20);
      put16(h, z64 ? 45 : 20), put16(h, 0), put16(h, 0), put16(h, 0), put16(h, kDosDate);
      put32(h, crc);
      put32(h, z64 ? 0xffffffffu : static_cast<uint32_t>(size));
      put32(h, z64 ? 0xffffffffu : static_cast<uint32_t>(size));
      put16(h, static_cast<uint16_t>(fname.size()));
      put16(h, static_cast<uint16_t>(central ? extra.size() : (z64 ? 20 : 0)));
      if (central) {
        put16(h, 0), put16(h, 0), put16(h, 0), put32(h, 0);
        put32(h, z64 ? 0xffffffffu : static_cast<uint32_t>(offset));
      }
      h += fname;
      if (central) {
        h += extra;
      } else if (z64) {
        put16(h, 0x0001), put16(h, 16), put64(h, size), put64(h, size);
      }
      return h;
    };
    out += header(false);
    out += data;
    cd += header(true);
  }
  uint64_t cd_off = out.size(), n = arrays.size();
  out += cd;
  if (cd_off >= 0xffffffffu) {
    uint64_t z_off = out.size();
    put32(out, 0x06064b50), put64(out, 44), put16(out, 45), put16(out, 45), put32(out, 0), put32(out, 0);
    put64(out, n), put64(out, n), put64(out, cd.size()), put64(out, cd_off);
    put32(out, 0x07064b50), put32(out, 0), put64(out, z_off), put32(out, 1);
  }
  put32(out, 0x06054b50), put16(out, 0), put16(out, 0), put16(out, static_cast<uint16_t>(n)),
      put16(out, static_cast<uint16_t>(n));
  put32(out, static_cast<uint32_t>(cd.size()));
  put32(out, cd_off >= 0xffffffffu ? 0xffffffffu : static_cast<uint32_t>(cd_off));
  put16(out, 0);
  write_file_atomic(path, out);
}

}  // namespace fm
