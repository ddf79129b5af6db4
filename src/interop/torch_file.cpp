#include "interop/torch_file.h"

#include <caffe2/serialize/inline_container.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <unordered_map>

#include "interop/reader_errors.h"
#include "util/error.h"

namespace fm {
namespace {

// The data of one storage: a flat tensor of its dtype, or undefined while scanning (legacy format, first pass).
using StorageFn = std::function<torch::Tensor(const std::string& key, torch::ScalarType dtype, int64_t numel)>;

torch::ScalarType storage_dtype(const std::string& global, const std::string& path) {
  static const std::map<std::string, torch::ScalarType> types = {
      {"torch.FloatStorage", torch::kFloat32},   {"torch.DoubleStorage", torch::kFloat64},
      {"torch.HalfStorage", torch::kFloat16},    {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kInt64},      {"torch.IntStorage", torch::kInt32},
      {"torch.ShortStorage", torch::kInt16},     {"torch.CharStorage", torch::kInt8},
      {"torch.ByteStorage", torch::kUInt8},      {"torch.BoolStorage", torch::kBool},
      {"torch.UntypedStorage", torch::kUInt8}};
  auto it = types.find(global);
  if (it == types.end()) throw file_error(path, "unsupported tensor storage type " + global);
  return it->second;
}

// The bytes of `numel` elements of `dtype`; InputError "path: what: ..." when numel is negative or the product passes
// 64 bits (a count that wraps to a small one must not pass the size checks).
uint64_t storage_bytes(int64_t numel, torch::ScalarType dtype, const std::string& path, const std::string& what) {
  uint64_t bytes = 0;
  if (numel < 0 || __builtin_mul_overflow(static_cast<uint64_t>(numel), c10::elementSize(dtype), &bytes))
    throw file_error(path, what + ": " + std::to_string(numel) + " elements of " + c10::toString(dtype) +
                               " are more bytes than a file holds");
  return bytes;
}

PyPtr make(PyValue::Kind k) {
  auto v = std::make_shared<PyValue>();
  v->kind = k;
  return v;
}

// The pickle opcodes torch.save writes (protocol 2, as torch.save uses by default) and the few of protocols 3-5
// a hand-made file might add. Python's pickletools documents each.
class Unpickler {
 public:
  Unpickler(const char* data, size_t size, std::string path, StorageFn storage)
      : p_(data), n_(size), path_(std::move(path)), storage_(std::move(storage)) {}

  // Runs from `pos` up to and including STOP; returns the value and leaves pos() just after STOP.
  PyPtr run(size_t pos) {
    at_ = pos;
    stack_.clear();
    marks_.clear();
    memo_.clear();
    for (;;) {
      const uint8_t op = u8();
      switch (op) {
        case 0x80: u8(); break;           // PROTO
        case 0x95: bytes(8); break;       // FRAME
        case '.': return pop();           // STOP
        case '(': marks_.push_back(stack_.size()); break;
        case '0': pop(); break;
        case '1': pop_mark(); break;
        case '2': push(top()); break;
        case 'N': push(make(PyValue::Kind::None)); break;
        case 0x88: push(boolean(true)); break;
        case 0x89: push(boolean(false)); break;
        case 'J': push(integer(static_cast<int32_t>(le(4)))); break;
        case 'K': push(integer(le(1))); break;
        case 'M': push(integer(le(2))); break;
        case 0x8a: push(long_int(le(1))); break;
        case 0x8b: push(long_int(le(4))); break;
        case 'G': push(binfloat()); break;
        case 'X': push(string(PyValue::Kind::String, le(4))); break;
        case 0x8c: push(string(PyValue::Kind::String, le(1))); break;
        case 0x8d: push(string(PyValue::Kind::String, le(8))); break;
        case 'T': push(string(PyValue::Kind::String, le(4))); break;
        case 'U': push(string(PyValue::Kind::String, le(1))); break;
        case 'B': push(string(PyValue::Kind::Bytes, le(4))); break;
        case 'C': push(string(PyValue::Kind::Bytes, le(1))); break;
        case 0x8e: push(string(PyValue::Kind::Bytes, le(8))); break;
        case ']': push(make(PyValue::Kind::List)); break;
        case '}': push(make(PyValue::Kind::Dict)); break;
        case ')': push(make(PyValue::Kind::Tuple)); break;
        case 'l': push(sequence(PyValue::Kind::List, pop_mark())); break;
        case 't': push(sequence(PyValue::Kind::Tuple, pop_mark())); break;
        case 0x85: push(sequence(PyValue::Kind::Tuple, pop_n(1))); break;
        case 0x86: push(sequence(PyValue::Kind::Tuple, pop_n(2))); break;
        case 0x87: push(sequence(PyValue::Kind::Tuple, pop_n(3))); break;
        case 'd': {
          auto d = make(PyValue::Kind::Dict);
          set_items(*d, pop_mark());
          push(d);
          break;
        }
        case 'a': {
          auto v = pop();
          append(*top(), {v});
          break;
        }
        case 'e': {
          auto items = pop_mark();
          append(*top(), items);
          break;
        }
        case 's': {
          auto v = pop(), k = pop();
          set_items(*top(), {k, v});
          break;
        }
        case 'u': {
          auto items = pop_mark();
          set_items(*top(), items);
          break;
        }
        case 'q': memo_[le(1)] = top(); break;
        case 'r': memo_[le(4)] = top(); break;
        case 0x94: memo_[memo_.size()] = top(); break;  // MEMOIZE
        case 'h': push(memo(le(1))); break;
        case 'j': push(memo(le(4))); break;
        case 'c': {
          auto g = make(PyValue::Kind::Global);
          auto module = line();
          g->s = module + "." + line();
          push(g);
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          auto name = pop(), module = pop();
          auto g = make(PyValue::Kind::Global);
          g->s = module->s + "." + name->s;
          push(g);
          break;
        }
        case 'R': {
          auto args = pop(), fn = pop();
          push(call(*fn, *args));
          break;
        }
        case 0x81: {  // NEWOBJ: an instance of a class fm does not look into
          pop();
          auto cls = pop();
          auto o = make(PyValue::Kind::Object);
          o->s = cls->s;
          push(o);
          break;
        }
        case 'b': pop(); break;  // BUILD: object state (a state_dict's _metadata, an object's fields) is not needed
        case 'Q': push(persistent(*pop())); break;
        default: {
          char hex[8];
          std::snprintf(hex, sizeof hex, "0x%02x", op);
          fail(std::string("unsupported pickle opcode ") + hex + " at byte " + std::to_string(at_ - 1));
        }
      }
    }
  }
  size_t pos() const { return at_; }

 private:
  [[noreturn]] void fail(const std::string& msg) const { throw file_error(path_, "torch.save data: " + msg); }

  const char* bytes(uint64_t k) {
    if (k > n_ - at_) fail("truncated (needs " + std::to_string(k) + " bytes at byte " + std::to_string(at_) + ")");
    const char* b = p_ + at_;
    at_ += k;
    return b;
  }
  uint8_t u8() { return static_cast<uint8_t>(*bytes(1)); }
  uint64_t le(int k) {
    const auto* b = reinterpret_cast<const uint8_t*>(bytes(k));
    uint64_t v = 0;
    for (int i = k - 1; i >= 0; --i) v = (v << 8) | b[i];
    return v;
  }
  std::string line() {
    const char* start = p_ + at_;
    const void* nl = std::memchr(start, '\n', n_ - at_);
    if (!nl) fail("unterminated GLOBAL name");
    size_t len = static_cast<const char*>(nl) - start;
    at_ += len + 1;
    return std::string(start, len);
  }

  void push(PyPtr v) { stack_.push_back(std::move(v)); }
  PyPtr top() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() == marks_.back())) fail("stack underflow");
    return stack_.back();
  }
  PyPtr pop() {
    auto v = top();
    stack_.pop_back();
    return v;
  }
  std::vector<PyPtr> pop_mark() {
    if (marks_.empty()) fail("no MARK on the stack");
    std::vector<PyPtr> items(stack_.begin() + marks_.back(), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  std::vector<PyPtr> pop_n(size_t k) {
    std::vector<PyPtr> items(k);
    for (size_t i = k; i-- > 0;) items[i] = pop();
    return items;
  }
  PyPtr memo(uint64_t k) {
    auto it = memo_.find(k);
    if (it == memo_.end()) fail("memo key " + std::to_string(k) + " used before it is set");
    return it->second;
  }

  static PyPtr boolean(bool b) {
    auto v = make(PyValue::Kind::Bool);
    v->i = b;
    return v;
  }
  static PyPtr integer(int64_t i) {
    auto v = make(PyValue::Kind::Int);
    v->i = i;
    return v;
  }
  PyPtr long_int(uint64_t k) {  // little-endian two's complement of k bytes
    const auto* b = reinterpret_cast<const uint8_t*>(bytes(k));
    auto v = make(PyValue::Kind::Int);
    uint64_t x = 0;
    for (uint64_t i = std::min<uint64_t>(k, 8); i-- > 0;) x = (x << 8) | b[i];
    if (k > 0 && k < 8 && (b[k - 1] & 0x80)) x |= ~uint64_t{0} << (8 * k);  // sign-extend
    v->i = static_cast<int64_t>(x);
    v->big_int = k > 8;
    return v;
  }
  PyPtr binfloat() {  // big-endian IEEE double
    const auto* b = reinterpret_cast<const uint8_t*>(bytes(8));
    uint64_t x = 0;
    for (int i = 0; i < 8; ++i) x = (x << 8) | b[i];
    auto v = make(PyValue::Kind::Float);
    std::memcpy(&v->f, &x, 8);
    return v;
  }
  PyPtr string(PyValue::Kind k, uint64_t len) {
    auto v = make(k);
    const char* b = bytes(len);
    v->s.assign(b, len);
    return v;
  }
  // Makes `item` an item of the container `c`. Python's pickler completes a container before it writes it into
  // another, so a container that changes after that is one that comes to contain itself; without such changes the
  // depths are exact. torch.save nests far less deeply than kMaxDepth: Python's recursion limit stops it first.
  void place(PyValue& c, const PyPtr& item) {
    if (item.get() == &c) fail("a container that contains itself");
    if (item->depth >= kMaxDepth) fail("containers nested deeper than " + std::to_string(kMaxDepth) + " levels");
    c.depth = std::max(c.depth, item->depth + 1);
    item->contained = true;
  }
  void check_unplaced(const PyValue& c) {
    if (c.contained) fail("a list or dict changed after it became an item of another: one that contains itself");
  }
  PyPtr sequence(PyValue::Kind k, std::vector<PyPtr> items) {
    auto v = make(k);
    for (const auto& x : items) place(*v, x);
    v->items = std::move(items);
    return v;
  }
  void append(PyValue& list, const std::vector<PyPtr>& items) {
    if (list.kind != PyValue::Kind::List) fail("APPEND to something that is not a list");
    check_unplaced(list);
    for (const auto& x : items) place(list, x);
    list.items.insert(list.items.end(), items.begin(), items.end());
  }
  void set_items(PyValue& d, const std::vector<PyPtr>& kv) {
    if (d.kind != PyValue::Kind::Dict) fail("SETITEM on something that is not a dict");
    if (kv.size() % 2) fail("SETITEMS with an odd number of values");
    check_unplaced(d);
    for (const auto& x : kv) place(d, x);
    for (size_t i = 0; i < kv.size(); i += 2) d.dict.emplace_back(kv[i], kv[i + 1]);
  }

  int64_t int_arg(const PyValue& v, const char* what) {
    if (v.kind != PyValue::Kind::Int || v.big_int) fail(std::string("expected an integer for ") + what);
    return v.i;
  }
  std::vector<int64_t> ints(const PyValue& v, const char* what) {
    if (v.kind != PyValue::Kind::Tuple && v.kind != PyValue::Kind::List) fail(std::string("expected a tuple for ") + what);
    std::vector<int64_t> out;
    for (const auto& x : v.items) out.push_back(int_arg(*x, what));
    return out;
  }

  // The element count of a view of `size` and `stride` from `offset` into a storage of `storage_numel` elements; fails
  // when a size or stride is negative, when the count or the last element's offset passes int64 (checked products:
  // signed overflow is undefined and a wrapped count passes for a small one), or when the view reaches past the
  // storage. The count is formed in the order torch::empty forms it, so a count of 0 here is one it accepts.
  int64_t view_numel(int64_t storage_numel, int64_t offset, const std::vector<int64_t>& size,
                     const std::vector<int64_t>& stride) {
    int64_t numel = 1, last = offset;
    bool overflow = false;
    for (size_t i = 0; i < size.size(); ++i) {
      if (size[i] < 0 || stride[i] < 0) fail("negative tensor size or stride");
      overflow |= __builtin_mul_overflow(numel, size[i], &numel);
    }
    if (overflow)
      fail("tensor size " + c10::str(c10::IntArrayRef(size)) + " too large (more elements than int64 counts)");
    for (size_t i = 0; numel > 0 && i < size.size(); ++i) {
      int64_t step = 0;
      overflow |= __builtin_mul_overflow(size[i] - 1, stride[i], &step) || __builtin_add_overflow(last, step, &last);
    }
    if (offset < 0 || (numel > 0 && (overflow || last >= storage_numel)))
      fail("a tensor view reaches past its storage of " + std::to_string(storage_numel) + " elements");
    return numel;
  }

  // REDUCE: the callables torch.save's tensors and state_dicts use; anything else is an opaque object.
  PyPtr call(const PyValue& fn, const PyValue& args) {
    const auto& a = args.items;
    if (fn.s == "collections.OrderedDict") return make(PyValue::Kind::Dict);  // items follow with SETITEMS
    if (fn.s == "torch._utils._rebuild_tensor_v2" || fn.s == "torch._utils._rebuild_tensor") {
      if (a.size() < 4 || a[0]->kind != PyValue::Kind::Tensor) fail("malformed " + fn.s);
      auto out = make(PyValue::Kind::Tensor);
      const auto& storage = a[0]->tensor;
      const int64_t offset = int_arg(*a[1], "storage_offset");
      const auto size = ints(*a[2], "size"), stride = ints(*a[3], "stride");
      if (size.size() != stride.size()) fail("tensor size and stride differ in length");
      if (!storage.defined()) return out;  // scanning pass: the storages are not read yet
      const int64_t numel = view_numel(storage.numel(), offset, size, stride);
      out->tensor = numel ? storage.as_strided(size, stride, offset) : torch::empty(size, storage.options());
      return out;
    }
    if (fn.s == "torch._utils._rebuild_parameter" || fn.s == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty()) fail("malformed " + fn.s);
      return a[0];
    }
    auto o = make(PyValue::Kind::Object);
    o->s = fn.s;
    return o;
  }

  // BINPERSID: ('storage', storage type, key, location, numel[, view metadata (legacy format)]).
  PyPtr persistent(const PyValue& pid) {
    const auto& a = pid.items;
    if (pid.kind != PyValue::Kind::Tuple || a.size() < 5 || a[0]->s != "storage" || a[1]->kind != PyValue::Kind::Global)
      fail("unsupported persistent id (not a tensor storage)");
    if (a.size() > 5 && a[5]->kind != PyValue::Kind::None) fail("storage views of the pre-1.0 legacy format");
    auto dtype = storage_dtype(a[1]->s, path_);
    auto out = make(PyValue::Kind::Tensor);
    out->tensor = storage_(a[2]->s, dtype, int_arg(*a[4], "storage numel"));
    return out;
  }

  static constexpr int32_t kMaxDepth = 1000;
  const char* p_;
  size_t n_;
  size_t at_ = 0;
  std::string path_;
  StorageFn storage_;
  std::vector<PyPtr> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PyPtr> memo_;
};

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw file_error(path, "cannot open");
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

bool is_zip(const std::string& head) { return head.size() >= 4 && head.compare(0, 4, "PK\x03\x04") == 0; }

// The legacy format begins with the pickled magic number 0x1950a86a20f9469cfc6c (protocol 2: PROTO 2, LONG1 10 bytes).
const char kLegacyMagic[] = "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";
bool is_legacy(const std::string& head) {
  return head.size() >= sizeof kLegacyMagic - 1 && head.compare(0, sizeof kLegacyMagic - 1, kLegacyMagic) == 0;
}

// The storages of a zip-layout file, from its data/ records. Each is read once, however many tensors view it (they
// share it, as they do in Python), and all of them together may not hold more bytes than the file: a deflated record
// inflates to any size, and the reader must not allocate what the file cannot hold.
class ZipStorages {
 public:
  ZipStorages(caffe2::serialize::PyTorchStreamReader& reader, std::string path, uint64_t file_size)
      : reader_(reader), path_(std::move(path)), budget_(file_size), file_size_(file_size) {}

  torch::Tensor get(const std::string& key, torch::ScalarType dtype, int64_t numel) {
    const std::string rec = "data/" + key;
    if (auto it = read_.find(key); it != read_.end()) {
      if (it->second.scalar_type() != dtype || it->second.numel() != numel)
        throw file_error(path_, "tensor storage " + rec + " is declared with two different types or sizes");
      return it->second;
    }
    if (!reader_.hasRecord(rec)) throw file_error(path_, "tensor storage " + rec + " is missing");
    const uint64_t want = storage_bytes(numel, dtype, path_, "tensor storage " + rec);
    if (reader_.getRecordSize(rec) != want)
      throw file_error(path_, "tensor storage " + rec + " holds " + std::to_string(reader_.getRecordSize(rec)) +
                                  " bytes, its header says " + std::to_string(want));
    if (want > budget_)
      throw file_error(path_, "tensor storage " + rec + " holds " + std::to_string(want) + " bytes, which with " +
                                  std::to_string(file_size_ - budget_) + " in the storages before it is more than " +
                                  "the file's " + std::to_string(file_size_) + " bytes");
    budget_ -= want;
    auto t = torch::empty({numel}, torch::dtype(dtype));
    if (want) reader_.getRecord(rec, t.data_ptr(), want);
    read_.emplace(key, t);
    return t;
  }

 private:
  caffe2::serialize::PyTorchStreamReader& reader_;
  std::string path_;
  uint64_t budget_, file_size_;  // bytes the storages may still take, of the file's size
  std::map<std::string, torch::Tensor> read_;
};

PyPtr load_zip(const std::string& path, uint64_t file_size) {
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const c10::Error&) {
    throw file_error(path, "not a readable zip archive (truncated?)");
  }
  // Any read from the archive throws c10::Error when a record is damaged (a bad local header, a CRC mismatch), not
  // only the first: one catch around all of them.
  try {
    if (!reader->hasRecord("data.pkl")) throw file_error(path, "a zip archive without data.pkl: not a torch.save file");
    if (reader->hasRecord("byteorder")) {
      auto [ptr, size] = reader->getRecord("byteorder");
      if (std::string(static_cast<const char*>(ptr.get()), size) != "little")
        throw file_error(path, "tensors saved big-endian are not supported");
    }
    auto [pkl, pkl_size] = reader->getRecord("data.pkl");
    ZipStorages storages(*reader, path, file_size);
    auto storage = [&](const std::string& key, torch::ScalarType dtype, int64_t numel) {
      return storages.get(key, dtype, numel);
    };
    return Unpickler(static_cast<const char*>(pkl.get()), pkl_size, path, storage).run(0);
  } catch (const c10::Error& e) {
    throw file_error(path, "damaged zip archive: " + brief(e));
  }
}

// Legacy layout: pickled magic number, protocol version (1001), sys_info, the object, the list of storage keys, then
// for each key in that order its element count (int64) and raw bytes.
PyPtr load_legacy(const std::string& path, const std::string& bytes) {
  const char* p = bytes.data();
  const size_t n = bytes.size();
  // Element sizes come from the object's persistent ids: the scan records each storage key's dtype and count.
  std::map<std::string, std::pair<torch::ScalarType, int64_t>> declared;
  Unpickler scan(p, n, path, [&](const std::string& key, torch::ScalarType dt, int64_t numel) {
    declared[key] = {dt, numel};
    return torch::Tensor();
  });
  scan.run(0);  // magic number
  auto version = scan.run(scan.pos());
  if (version->kind != PyValue::Kind::Int || version->i != 1001)
    throw file_error(path, "legacy torch.save protocol version is not 1001");
  auto sys_info = scan.run(scan.pos());
  if (const auto* le = sys_info->get("little_endian"); le && le->kind == PyValue::Kind::Bool && !le->i)
    throw file_error(path, "tensors saved big-endian are not supported");
  const size_t object_at = scan.pos();
  scan.run(object_at);  // the object, only to find where it ends and which storages it declares
  auto keys = scan.run(scan.pos());
  if (keys->kind != PyValue::Kind::List) throw file_error(path, "legacy torch.save: no list of storage keys");

  std::map<std::string, torch::Tensor> storages;
  size_t at = scan.pos();
  for (const auto& k : keys->items) {
    auto it = declared.find(k->s);
    if (k->kind != PyValue::Kind::String || it == declared.end())
      throw file_error(path, "legacy torch.save: storage key " + k->s + " is not used by any tensor");
    if (n - at < 8) throw file_error(path, "truncated before the data of storage " + k->s);
    int64_t numel = 0;
    std::memcpy(&numel, p + at, 8);
    at += 8;
    const auto [dtype, declared_numel] = it->second;
    const uint64_t want = storage_bytes(numel, dtype, path, "storage " + k->s);
    if (numel != declared_numel || want > n - at)
      throw file_error(path, "storage " + k->s + ": " + std::to_string(numel) + " elements recorded, " +
                                 std::to_string(declared_numel) + " declared, " + std::to_string(n - at) +
                                 " bytes left in the file");
    auto t = torch::empty({numel}, torch::dtype(dtype));
    if (want) std::memcpy(t.data_ptr(), p + at, want);
    at += want;
    storages[k->s] = t;
  }
  return Unpickler(p, n, path, [&](const std::string& key, torch::ScalarType, int64_t) {
           auto it = storages.find(key);
           if (it == storages.end()) throw file_error(path, "storage " + key + " has no data in the file");
           return it->second;
         }).run(object_at);
}

}  // namespace

PyValue::~PyValue() {
  // Items this value alone owns are emptied into `pending` before they are released, so no destructor below this one
  // has items of its own to release.
  std::vector<PyPtr> pending;
  auto take_items = [&](PyValue& v) {
    for (auto& x : v.items) pending.push_back(std::move(x));
    for (auto& [k, x] : v.dict) {
      pending.push_back(std::move(k));
      pending.push_back(std::move(x));
    }
    v.items.clear();
    v.dict.clear();
  };
  take_items(*this);
  while (!pending.empty()) {
    PyPtr v = std::move(pending.back());
    pending.pop_back();
    if (v && v.use_count() == 1) take_items(*v);
  }
}

const PyValue* PyValue::get(const std::string& key) const {
  if (kind != Kind::Dict) return nullptr;
  for (const auto& [k, v] : dict)
    if (k->kind == Kind::String && k->s == key) return v.get();
  return nullptr;
}

bool looks_like_torch_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::string head(sizeof kLegacyMagic - 1, '\0');
  f.read(head.data(), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<size_t>(f.gcount()));
  if (is_legacy(head)) return true;
  if (!is_zip(head)) return false;
  // An .npz is a zip archive too; torch.save's has a data.pkl under its top-level folder.
  try {
    return caffe2::serialize::PyTorchStreamReader(path).hasRecord("data.pkl");
  } catch (const c10::Error&) {
    return false;
  }
}

PyPtr load_torch_file(const std::string& path) {
  auto bytes = read_all(path);
  return as_input_error(path, "torch.save data: ", [&] {
    if (is_zip(bytes)) return load_zip(path, bytes.size());
    if (is_legacy(bytes)) return load_legacy(path, bytes);
    throw file_error(path, "not a file written by torch.save (neither a zip archive nor the legacy format)");
  });
}

std::map<std::string, torch::Tensor> tensor_dict(const PyValue& v, const std::string& path, const std::string& what) {
  if (v.kind != PyValue::Kind::Dict) throw file_error(path, what + " is not a dict of tensors");
  std::map<std::string, torch::Tensor> out;
  for (const auto& [k, t] : v.dict) {
    if (k->kind != PyValue::Kind::String || t->kind != PyValue::Kind::Tensor)
      throw file_error(path, what + " is not a dict of tensors (entry " + (k->kind == PyValue::Kind::String ? k->s : "?") +
                                 ")");
    out[k->s] = t->tensor;
  }
  return out;
}

}  // namespace fm
