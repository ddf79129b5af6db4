#include "interop/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>

#include <nlohmann/json.hpp>

#include "interop/reader_errors.h"
#include "io/file_util.h"
#include "util/error.h"

namespace fm {
namespace {

// The safetensors reference refuses headers above 100 MB; so do we, before allocating one.
constexpr uint64_t kMaxHeader = 100'000'000;

const std::vector<std::pair<std::string, torch::ScalarType>>& dtype_names() {
  static const std::vector<std::pair<std::string, torch::ScalarType>> names = {
      {"F64", torch::kFloat64}, {"F32", torch::kFloat32}, {"F16", torch::kFloat16}, {"BF16", torch::kBFloat16},
      {"I64", torch::kInt64},   {"I32", torch::kInt32},   {"I16", torch::kInt16},   {"I8", torch::kInt8},
      {"U8", torch::kUInt8},    {"BOOL", torch::kBool}};
  return names;
}

std::string dtype_name(torch::ScalarType t) {
  for (const auto& [name, type] : dtype_names())
    if (type == t) return name;
  throw std::invalid_argument(std::string("safetensors: no dtype name for ") + c10::toString(t));
}

bool little_endian() {
  const uint16_t one = 1;
  unsigned char b;
  std::memcpy(&b, &one, 1);
  return b == 1;
}

}  // namespace

bool is_safetensors_path(const std::string& path) {
  const std::string ext = ".safetensors";
  return path.size() >= ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0;
}

void write_safetensors(const std::string& path, const SafeTensors& st) {
  // The format is little-endian; so are the machines LibTorch runs on, and a tensor's bytes are copied as they are.
  if (!little_endian()) throw std::runtime_error("safetensors: big-endian hosts are not supported");
  nlohmann::json header = nlohmann::json::object();
  if (!st.metadata.empty()) header["__metadata__"] = st.metadata;
  std::vector<torch::Tensor> cpu;
  uint64_t offset = 0;
  for (const auto& [name, t] : st.tensors) {
    if (name == "__metadata__" || header.contains(name))
      throw std::invalid_argument("safetensors: duplicate or reserved tensor name " + name);
    auto c = t.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = c.numel() * c.element_size();
    header[name] = {{"dtype", dtype_name(c.scalar_type())}, {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    cpu.push_back(c);
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // pad with spaces so the data starts 8-byte aligned, as the reference does
  std::string out;
  out.reserve(8 + h.size() + offset);
  const uint64_t n = h.size();
  out.append(reinterpret_cast<const char*>(&n), 8);
  out += h;
  for (const auto& c : cpu) out.append(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
  write_file_atomic(path, out);
}

namespace {

// One tensor's header entry, checked: a dtype fm knows, a shape whose element count fits int64 and byte count 64 bits,
// and data_offsets inside the data that span exactly those bytes.
struct Entry {
  torch::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

// The sizes in the JSON shape `js`; `bytes` is set to the tensor's byte count for elements of `elem` bytes. Every
// product is checked, as torch::empty and the safetensors reference check it: a count that wraps must not pass for a
// small one.
std::vector<int64_t> checked_shape(const nlohmann::json& js, size_t elem, uint64_t& bytes, const std::string& path,
                                   const std::string& where) {
  if (!js.is_array()) throw file_error(path, where + "shape is not an array");
  std::vector<int64_t> shape;
  int64_t numel = 1;
  for (const auto& d : js) {
    if (!d.is_number_unsigned()) throw file_error(path, where + "shape " + js.dump() + " is not non-negative integers");
    const uint64_t v = d.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(numel, static_cast<int64_t>(v), &numel))
      throw file_error(path, where + "shape " + js.dump() + " is larger than the file");
    shape.push_back(static_cast<int64_t>(v));
  }
  if (__builtin_mul_overflow(static_cast<uint64_t>(numel), elem, &bytes))
    throw file_error(path, where + "shape " + js.dump() + " is larger than the file");
  return shape;
}

Entry parse_entry(const nlohmann::json& entry, const std::string& name, uint64_t data_size, const std::string& path) {
  const std::string where = "tensor '" + name + "': ";
  if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets"))
    throw file_error(path, where + "needs dtype, shape and data_offsets");
  const auto& jd = entry["dtype"];
  auto it = std::find_if(dtype_names().begin(), dtype_names().end(),
                         [&](const auto& p) { return jd.is_string() && p.first == jd.get<std::string>(); });
  if (it == dtype_names().end()) throw file_error(path, where + "unsupported dtype " + jd.dump());
  Entry e{it->second, {}, 0, 0};
  uint64_t want = 0;
  e.shape = checked_shape(entry["shape"], c10::elementSize(e.dtype), want, path, where);
  const auto& jo = entry["data_offsets"];
  if (!jo.is_array() || jo.size() != 2 || !jo[0].is_number_unsigned() || !jo[1].is_number_unsigned())
    throw file_error(path, where + "data_offsets is not two non-negative integers");
  e.begin = jo[0].get<uint64_t>();
  e.end = jo[1].get<uint64_t>();
  if (e.begin > e.end || e.end > data_size)
    throw file_error(path, where + "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                               "] lie outside the " + std::to_string(data_size) + " data bytes");
  if (e.end - e.begin != want)
    throw file_error(path, where + "data_offsets span " + std::to_string(e.end - e.begin) + " bytes, but " +
                               it->first + " " + entry["shape"].dump() + " needs " + std::to_string(want));
  return e;
}

// The JSON header of the file's `bytes`; `n` is set to its length.
nlohmann::json read_header(const std::string& bytes, uint64_t& n, const std::string& path) {
  if (bytes.size() < 8) throw file_error(path, "not a safetensors file (shorter than its 8-byte header length)");
  std::memcpy(&n, bytes.data(), 8);
  if (n > kMaxHeader || n > bytes.size() - 8)
    throw file_error(path, "not a safetensors file (header length " + std::to_string(n) + " exceeds the file's " +
                               std::to_string(bytes.size()) + " bytes)");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  } catch (const nlohmann::json::exception& e) {
    throw file_error(path, std::string("safetensors header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) throw file_error(path, "safetensors header is not a JSON object");
  return header;
}

// Sorts `entries` by offset and checks that they cover the data exactly, without gaps or overlaps, as the format packs
// them (an empty tensor sorts before one that starts where it does).
void check_packed(std::vector<std::pair<Entry, std::string>>& entries, uint64_t data_size, const std::string& path) {
  std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    return std::make_pair(a.first.begin, a.first.end) < std::make_pair(b.first.begin, b.first.end);
  });
  uint64_t at = 0;
  for (const auto& [e, name] : entries) {
    if (e.begin != at)
      throw file_error(path, "tensor '" + name + "': data_offsets start at " + std::to_string(e.begin) +
                                 ", expected " + std::to_string(at) +
                                 " (tensors must be packed without gaps or overlaps)");
    at = e.end;
  }
  if (at != data_size)
    throw file_error(path, std::to_string(data_size - at) + " bytes after the last tensor (truncated header or data?)");
}

SafeTensors read_checked(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw file_error(path, "cannot open");
  const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  uint64_t n = 0;
  const nlohmann::json header = read_header(bytes, n, path);
  const char* data = bytes.data() + 8 + n;
  const uint64_t data_size = bytes.size() - 8 - n;

  SafeTensors st;
  std::vector<std::pair<Entry, std::string>> entries;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) throw file_error(path, "__metadata__ is not an object of strings");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) throw file_error(path, "__metadata__." + k + ": not a string");
        st.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    entries.emplace_back(parse_entry(entry, name, data_size, path), name);
  }
  check_packed(entries, data_size, path);
  for (const auto& [e, name] : entries) {  // in file order
    auto t = torch::empty(e.shape, torch::dtype(e.dtype));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), data + e.begin, e.end - e.begin);
    st.tensors.emplace_back(name, t);
  }
  return st;
}

}  // namespace

SafeTensors read_safetensors(const std::string& path) {
  if (!little_endian()) throw std::runtime_error("safetensors: big-endian hosts are not supported");
  return as_input_error(path, "", [&] { return read_checked(path); });
}

}  // namespace fm
