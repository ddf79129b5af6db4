#include "io/npy.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <memory>
#include <filesystem>
#include <zip.h>
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

namespace {

// numpy refuses headers longer than this by default (np.load's max_header_size), and writes none near it: every real
// header fits, and a hostile one cannot make the parser walk gigabytes.
constexpr size_t kMaxHeaderBytes = 10000;
constexpr size_t kMaxDims = 32;

struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
  bool has_fortran_order = false, has_shape = false;
};

// The header is a Python dict literal, as numpy writes it: {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// A small linear scan over exactly that grammar (strings, True/False, a tuple of integers); anything else, such as the
// list that describes a structured dtype, is refused.
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& what) : s_(text), what_(what) {}

  NpyHeader parse() {
    NpyHeader h;
    bool descr = false;
    expect('{');
    while (!peek('}')) {
      const std::string key = quoted();
      expect(':');
      if (key == "descr") {
        if (!peek('\'') && !peek('"')) throw bad("unsupported dtype (structured arrays are not supported)");
        h.descr = quoted(), descr = true;
      } else if (key == "fortran_order") {
        h.fortran_order = boolean(), h.has_fortran_order = true;
      } else if (key == "shape") {
        h.shape = tuple(), h.has_shape = true;
      } else {
        throw bad("malformed .npy header (unexpected key '" + key + "')");
      }
      if (!peek('}')) expect(',');
    }
    expect('}');
    if (!descr) throw bad("malformed .npy header (no descr)");
    return h;
  }

 private:
  InputError bad(const std::string& m) const { return InputError(what_ + ": " + m); }
  InputError malformed(const std::string& expected) const {
    return bad("malformed .npy header (expected " + expected + " at header byte " + std::to_string(i_) + ")");
  }
  void skip_space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  bool peek(char c) {
    skip_space();
    return i_ < s_.size() && s_[i_] == c;
  }
  void expect(char c) {
    if (!peek(c)) throw malformed(std::string("'") + c + "'");
    ++i_;
  }
  std::string quoted() {
    skip_space();
    if (i_ >= s_.size() || (s_[i_] != '\'' && s_[i_] != '"')) throw malformed("a quoted string");
    const char q = s_[i_++];
    const size_t close = s_.find(q, i_);
    if (close == std::string::npos) throw malformed("a closing quote");
    std::string out = s_.substr(i_, close - i_);
    i_ = close + 1;
    return out;
  }
  bool boolean() {
    skip_space();
    for (const char* word : {"True", "False"})
      if (s_.compare(i_, std::strlen(word), word) == 0) {
        i_ += std::strlen(word);
        return word[0] == 'T';
      }
    throw malformed("True or False");
  }
  std::vector<int64_t> tuple() {
    std::vector<int64_t> dims;
    expect('(');
    while (!peek(')')) {
      if (dims.size() == kMaxDims) throw bad("shape has more than " + std::to_string(kMaxDims) + " dimensions");
      size_t digits = 0;
      int64_t d = 0;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
        if (++digits > 18) throw bad("shape has a dimension with more than 18 digits");
        d = d * 10 + (s_[i_++] - '0');
      }
      if (digits == 0) throw malformed("a dimension (non-negative integer)");
      if (i_ < s_.size() && s_[i_] == 'L') ++i_;  // Python 2's long literal, in files numpy wrote long ago
      dims.push_back(d);
      if (!peek(')')) expect(',');
    }
    expect(')');
    return dims;
  }

  const std::string& s_;
  const std::string& what_;
  size_t i_ = 0;
};

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
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
  if (header_len > kMaxHeaderBytes)
    throw bad(".npy header length " + std::to_string(header_len) + " is over numpy's limit of " +
              std::to_string(kMaxHeaderBytes) + " bytes");
  if (header_len > size - header_start) throw bad("truncated .npy header");
  const std::string text(reinterpret_cast<const char*>(data + header_start), header_len);
  const NpyHeader h = HeaderParser(text, what).parse();
  const DType* dt = find_dtype(h.descr);
  if (!dt) throw bad("unsupported dtype '" + h.descr + "' (uint8, int8, bool, int32, int64, float16/32/64)");
  if (!h.has_fortran_order) throw bad("malformed .npy header (no fortran_order)");
  if (!h.has_shape) throw bad("malformed .npy header (no shape)");
  if (h.fortran_order) throw bad("Fortran-ordered arrays are not supported (save with np.ascontiguousarray)");
  // The byte count must fit in int64 before it is compared with the file; zero-length dimensions do not excuse huge
  // ones, since torch checks the product of the others too.
  uint64_t count = 1, nonzero = 1;
  for (int64_t d : h.shape) {
    count *= static_cast<uint64_t>(d);
    if (d > 0 && __builtin_mul_overflow(nonzero, static_cast<uint64_t>(d), &nonzero)) nonzero = UINT64_MAX;
  }
  if (nonzero > static_cast<uint64_t>(INT64_MAX) / dt->size)
    throw bad("shape " + shape_text(h.shape) + " is too large (more than 2^63 bytes)");
  const size_t offset = header_start + header_len;
  const uint64_t nbytes = count * dt->size;
  if (size - offset != nbytes)
    throw bad("data holds " + std::to_string(size - offset) + " bytes but shape " + shape_text(h.shape) + " and dtype " +
              h.descr + " need " + std::to_string(nbytes));
  // A bool byte other than 0 or 1 is undefined behaviour in every op that reads it; numpy never writes one.
  if (dt->type == torch::kBool && std::any_of(data + offset, data + size, [](uint8_t b) { return b > 1; }))
    throw bad("bool array holds a byte other than 0 and 1");
  auto t = torch::empty(h.shape, torch::TensorOptions().dtype(dt->type));
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

// Deflate expands at most 1032-fold, so a member that claims more is corrupt; checking this before allocating keeps a
// hostile size field from reserving gigabytes.
constexpr uint64_t kMaxDeflateRatio = 1032;

struct ZipEntry {
  std::string name;
  zip_uint64_t index = 0;
  uint64_t size = 0;
};

// The zip container, read with libzip (which checks the directory, the local headers against it, and each member's
// CRC); what is left here is the members' names, their declared sizes, and the clear one-line messages.
class ZipReader {
 public:
  explicit ZipReader(const std::string& path) : path_(path) {
    std::error_code ec;
    file_size_ = std::filesystem::file_size(path, ec);
    if (ec) file_size_ = UINT64_MAX;  // not a regular file: libzip says why below
    if (file_size_ == 0) throw bad("empty file, not an .npz archive");
    int code = 0;
    za_.reset(zip_open(path.c_str(), ZIP_RDONLY | ZIP_CHECKCONS, &code));
    if (!za_) {
      zip_error_t err;
      zip_error_init_with_code(&err, code);
      std::string why = zip_error_strerror(&err);
      zip_error_fini(&err);
      if (code == ZIP_ER_OPEN || code == ZIP_ER_NOENT || code == ZIP_ER_READ) throw bad("cannot open (" + why + ")");
      throw bad("not a zip/.npz archive, or a truncated one (" + why + ")");
    }
    const zip_int64_t n = zip_get_num_entries(za_.get(), 0);
    for (zip_int64_t i = 0; i < n; ++i) {
      zip_stat_t st;
      zip_stat_init(&st);
      if (zip_stat_index(za_.get(), static_cast<zip_uint64_t>(i), ZIP_FL_ENC_RAW, &st) != 0 || !(st.valid & ZIP_STAT_NAME))
        throw bad("corrupt central directory (member " + std::to_string(i) + ")");
      entries_.push_back({st.name, static_cast<zip_uint64_t>(i), st.size});
    }
  }
  const std::vector<ZipEntry>& entries() const { return entries_; }

  std::vector<uint8_t> read(const ZipEntry& e) {
    const std::string what = "member " + e.name;
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(za_.get(), e.index, 0, &st) != 0) throw bad(what + ": " + zip_strerror(za_.get()));
    if (st.valid & ZIP_STAT_ENCRYPTION_METHOD && st.encryption_method != ZIP_EM_NONE)
      throw bad(what + ": encrypted members are not supported");
    if (st.comp_method != ZIP_CM_STORE && st.comp_method != ZIP_CM_DEFLATE)
      throw bad(what + ": unsupported compression method " + std::to_string(st.comp_method) +
                " (numpy writes stored or deflated members)");
    if (st.comp_size > file_size_ ||
        (st.comp_method == ZIP_CM_STORE ? st.size != st.comp_size : st.size / kMaxDeflateRatio > st.comp_size))
      throw bad(what + ": declares " + std::to_string(st.size) + " bytes from " + std::to_string(st.comp_size) +
                " compressed (corrupt size field)");
    zip_file_t* zf = zip_fopen_index(za_.get(), e.index, 0);
    if (!zf) throw bad(what + ": cannot read (" + zip_strerror(za_.get()) + ")");
    std::vector<uint8_t> out(st.size);
    uint64_t got = 0;
    zip_int64_t r = 0;
    while (got < out.size() && (r = zip_fread(zf, out.data() + got, out.size() - got)) > 0) got += r;
    // One more read must find the end: that is where libzip compares the CRC, and it catches a member longer than
    // its declared size.
    uint8_t extra;
    if (r >= 0 && got == out.size()) r = zip_fread(zf, &extra, 1);
    std::string why = zip_file_strerror(zf);
    const bool crc = zip_error_code_zip(zip_file_get_error(zf)) == ZIP_ER_CRC;
    zip_fclose(zf);
    if (crc) throw bad(what + ": CRC mismatch (file corrupt)");
    if (r < 0) throw bad(what + ": corrupt or truncated data (" + why + ")");
    if (got != out.size() || r != 0)
      throw bad(what + ": holds " + (r != 0 ? "more than" : std::to_string(got) + " bytes, not") + " the " +
                std::to_string(out.size()) + " bytes its directory entry declares");
    return out;
  }

 private:
  InputError bad(const std::string& m) const { return file_error(path_, m); }

  std::string path_;
  uint64_t file_size_ = 0;
  std::unique_ptr<zip_t, decltype(&zip_discard)> za_{nullptr, zip_discard};
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

std::string shape_string(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

}  // namespace fm
