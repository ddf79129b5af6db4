// Tests of the formats other tools define (src/interop/): safetensors, torch.save files, torchcfm's U-Net names,
// fm export / fm import against torchcfm and the safetensors package in the venv (tests/ref/interop_ref.py).
#include <fstream>
#include <tuple>

#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "checkpoint/checkpoint.h"
#include "config/config.h"
#include "fid/inception.h"
#include "io/crc32c.h"
#include "interop/safetensors.h"
#include "train/tensorboard_log.h"
#include "interop/torch_file.h"
#include "interop/torchcfm_unet.h"
#include "io/image.h"
#include "io/npy.h"
#include "nn/unet.h"
#include "nn/velocity_field.h"
#include "test_util.h"
#include "util/error.h"

namespace fm {
namespace {

using namespace std::string_literals;
using test::TempDir;

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
void spit(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// Runs tests/ref/interop_ref.py MODE DIR; skips the test when torchcfm or safetensors is missing from the venv.
#define RUN_REF(mode, dir)                                                                                      \
  do {                                                                                                          \
    auto r_ = test::run(std::string(FM_PYTHON_EXE) + " " + FM_SOURCE_DIR + "/tests/ref/interop_ref.py " + mode + \
                        " " + (dir));                                                                           \
    if (r_.code == 77) GTEST_SKIP() << "torchcfm or safetensors is not installed in the venv";                  \
    ASSERT_EQ(r_.code, 0) << r_.output;                                                                         \
  } while (0)

float max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<float>();
}

// ---------------------------------------------------------------------------------------------------------------------
// safetensors

TEST(SafeTensors, RoundTripsEveryDtypeWithMetadata) {
  TempDir dir("st");
  SafeTensors st;
  st.tensors = {{"f32", torch::randn({2, 3})},
                {"f64", torch::randn({4}, torch::kFloat64)},
                {"f16", torch::randn({3, 1}).to(torch::kHalf)},
                {"bf16", torch::randn({5}).to(torch::kBFloat16)},
                {"i64", torch::arange(-4, 4)},
                {"u8", torch::arange(250, 256).to(torch::kUInt8)},
                {"bool", torch::tensor({true, false})},
                {"empty", torch::zeros({0, 7})},
                {"strided", torch::randn({3, 4}).t()}};  // written as its logical (contiguous) values
  st.metadata = {{"format", "pt"}, {"json", R"({"a": [1, 2]})"}};
  write_safetensors(dir / "a.safetensors", st);
  auto back = read_safetensors(dir / "a.safetensors");
  EXPECT_EQ(back.metadata, st.metadata);
  ASSERT_EQ(back.tensors.size(), st.tensors.size());
  for (size_t i = 0; i < st.tensors.size(); ++i) {
    SCOPED_TRACE(st.tensors[i].first);
    EXPECT_EQ(back.tensors[i].first, st.tensors[i].first);  // file order is write order
    EXPECT_EQ(back.tensors[i].second.scalar_type(), st.tensors[i].second.scalar_type());
    EXPECT_TRUE(torch::equal(back.tensors[i].second, st.tensors[i].second));
  }
  // The header is padded so that the data starts 8-byte aligned, as the reference writer does.
  auto bytes = slurp(dir / "a.safetensors");
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes[8], '{');
}

TEST(SafeTensors, RejectsCorruptFilesNamingTheProblem) {
  TempDir dir("st_bad");
  SafeTensors st;
  st.tensors = {{"a", torch::ones({4})}, {"b", torch::zeros({2, 2})}};
  write_safetensors(dir / "ok.safetensors", st);
  const auto ok = slurp(dir / "ok.safetensors");
  uint64_t n = 0;
  std::memcpy(&n, ok.data(), 8);
  const std::string header = ok.substr(8, n), data = ok.substr(8 + n);
  auto with_header = [&](const std::string& h, const std::string& d) {
    const uint64_t len = h.size();
    return std::string(reinterpret_cast<const char*>(&len), 8) + h + d;
  };
  auto expect_error = [&](const std::string& bytes, const std::string& what) {
    spit(dir / "bad.safetensors", bytes);
    try {
      read_safetensors(dir / "bad.safetensors");
      ADD_FAILURE() << "accepted a file with " << what;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("bad.safetensors"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  expect_error(ok.substr(0, 5), "shorter than");
  expect_error(ok.substr(0, ok.size() - 1), "tensor 'b'");  // cut inside the last tensor's data
  expect_error(ok + "xx", "after the last tensor");
  std::string huge = ok;
  huge[7] = 0x7f;
  expect_error(huge, "header length");
  expect_error(with_header("{\"a\": 3}", data), "needs dtype");
  expect_error(with_header(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                           R"("b":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]}})",
                           data.substr(0, 24)),
               "without gaps or overlaps");
  expect_error(with_header(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]},)"
                           R"("b":{"dtype":"F32","shape":[2,2],"data_offsets":[16,32]}})",
                           data),
               "needs 12");
  expect_error(with_header(R"({"a":{"dtype":"Q7","shape":[4],"data_offsets":[0,16]}})", data.substr(0, 16)),
               "unsupported dtype");
  expect_error(with_header(R"({"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", data.substr(0, 16)),
               "non-negative");
  expect_error(with_header("{not json", data), "not valid JSON");
  expect_error(with_header(R"({"__metadata__":{"k":1}})", ""), "__metadata__.k");
  (void)header;
}

// A safetensors file of the given header text and data bytes.
std::string safetensors_bytes(const std::string& header, const std::string& data = "") {
  const uint64_t len = header.size();
  return std::string(reinterpret_cast<const char*>(&len), 8) + header + data;
}

// `read(path)` must throw InputError, with a message naming the file and containing `what`.
template <class Read>
void expect_input_error(Read read, const std::string& path, const std::string& what) {
  try {
    read(path);
    ADD_FAILURE() << path << " was accepted (expected an error containing '" << what << "')";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
  }
}

TEST(SafeTensors, RefusesShapesWhoseSizeOverflows) {
  TempDir dir("st_overflow");
  // Each shape's byte count wraps to 0 in 64 bits (or its element count passes int64), matching data_offsets [0, 0].
  for (const std::string shape : {"[2305843009213693952]",             // 2^61 F64 elements: 2^64 bytes
                                  "[4611686018427387904, 4, 0]",       // 2^64 elements before the 0
                                  "[4294967296, 4294967296]",          // 2^64 elements
                                  "[9223372036854775807, 2]"}) {       // int64 max, then twice that
    SCOPED_TRACE(shape);
    spit(dir / "huge.safetensors",
         safetensors_bytes(R"({"w":{"dtype":"F64","shape":)" + shape + R"(,"data_offsets":[0,0]}})"));
    expect_input_error(read_safetensors, dir / "huge.safetensors",
                       "tensor 'w': shape " + nlohmann::json::parse(shape).dump() + " is larger than the file");
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// torch.save files

TEST(TorchFile, ReadsZipAndLegacyFormatsLikePython) {
  TempDir dir("torchfile");
  RUN_REF("torchfile", dir.str());
  auto expected = read_npz(dir / "values.npz");
  for (const char* name : {"values.pt", "values_legacy.pt"}) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(looks_like_torch_file(dir / name));
    auto root = load_torch_file(dir / name);
    ASSERT_EQ(root->kind, PyValue::Kind::Dict);
    ASSERT_NE(root->get("state"), nullptr);
    auto state = tensor_dict(*root->get("state"), name, "state");  // an OrderedDict, as a state_dict is
    ASSERT_EQ(state.size(), expected.size());
    for (const auto& [k, v] : expected) {
      SCOPED_TRACE(k);
      ASSERT_TRUE(state.count(k));
      const auto& got = state.at(k);
      if (k == "scalar")
        EXPECT_EQ(got.dim(), 0);  // (fm's npz reader gives 0-d arrays shape [1])
      else
        EXPECT_EQ(got.sizes(), v.sizes());
      EXPECT_TRUE(torch::equal(got.to(v.scalar_type()).reshape(v.sizes()), v));
    }
    // Three views of one tensor keep sharing its storage, as in Python.
    EXPECT_TRUE(state.at("transposed").is_alias_of(state.at("column")));
    EXPECT_TRUE(state.at("transposed").is_alias_of(state.at("rows")));
    EXPECT_EQ(state.at("f16").scalar_type(), torch::kHalf);
    EXPECT_EQ(state.at("bf16").scalar_type(), torch::kBFloat16);
    const PyValue* step = root->get("step");
    ASSERT_NE(step, nullptr);
    EXPECT_EQ(step->i, 42);
    const PyValue* nested = root->get("nested");
    ASSERT_NE(nested, nullptr);
    const PyValue* list = nested->get("list");
    ASSERT_NE(list, nullptr);
    ASSERT_EQ(list->items.size(), 5u);
    EXPECT_EQ(list->items[0]->i, 1);
    EXPECT_DOUBLE_EQ(list->items[1]->f, 2.5);
    EXPECT_EQ(list->items[2]->s, "three");
    EXPECT_EQ(list->items[3]->kind, PyValue::Kind::None);
    EXPECT_EQ(list->items[4]->kind, PyValue::Kind::Bool);
    ASSERT_NE(nested->get("tuple"), nullptr);
    EXPECT_EQ(nested->get("tuple")->items[1]->i, -5);
    EXPECT_TRUE(nested->get("big")->big_int);
  }
  // Cut files: a clear error naming the file, never a crash.
  for (const char* name : {"values.pt", "values_legacy.pt"}) {
    auto bytes = slurp(dir / name);
    for (size_t cut : {bytes.size() / 2, bytes.size() - 3}) {
      spit(dir / "cut.pt", bytes.substr(0, cut));
      EXPECT_THROW(load_torch_file(dir / "cut.pt"), InputError) << name << " cut at " << cut;
    }
  }
  // A damaged record: the first local header's extra-field length (bytes 28-29) set to 65535, so that data.pkl's
  // bytes would start past the end of the file. LibTorch's zip reader throws c10::Error from getRecord, which must
  // still end as an input error naming the file (found by fuzz_torch_file).
  {
    auto bytes = slurp(dir / "values.pt");
    ASSERT_LT(bytes.size(), 65535u);
    bytes[28] = bytes[29] = static_cast<char>(0xff);
    spit(dir / "damaged.pt", bytes);
    EXPECT_TRUE(looks_like_torch_file(dir / "damaged.pt"));  // the central directory is intact
    try {
      load_torch_file(dir / "damaged.pt");
      ADD_FAILURE() << "a record past the end of the file was read";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("damaged.pt: damaged zip archive"), std::string::npos) << e.what();
    }
  }
  spit(dir / "text.pt", "hello");
  EXPECT_FALSE(looks_like_torch_file(dir / "text.pt"));
  EXPECT_THROW(load_torch_file(dir / "text.pt"), InputError);
}

// Hostile torch.save files, built byte by byte. The pickle opcodes are those Python's pickletools documents.
namespace pickle {
std::string le(uint64_t v, int bytes) {
  std::string s;
  for (int i = 0; i < bytes; ++i) s += static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}
std::string str(const std::string& s) { return "X" + le(s.size(), 4) + s; }                      // BINUNICODE
std::string integer(int64_t v) { return "\x8a\x08" + le(static_cast<uint64_t>(v), 8); }           // LONG1
std::string global(const std::string& m, const std::string& n) { return "c" + m + "\n" + n + "\n"; }  // GLOBAL
std::string tuple(const std::vector<int64_t>& v) {
  std::string s = "(";
  for (int64_t x : v) s += integer(x);
  return s + "t";
}
// The persistent id of a float32 storage, as torch.save writes it: ('storage', torch.FloatStorage, key, 'cpu', numel).
std::string storage_id(const std::string& key, int64_t numel) {
  return "(" + str("storage") + global("torch", "FloatStorage") + str(key) + str("cpu") + integer(numel) + "t";
}
// torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()), the storage given as ops.
std::string tensor(const std::string& storage, int64_t offset, const std::vector<int64_t>& size,
                   const std::vector<int64_t>& stride) {
  return global("torch._utils", "_rebuild_tensor_v2") + "(" + storage + integer(offset) + tuple(size) + tuple(stride) +
         "\x89" + global("collections", "OrderedDict") + ")R" + "tR";
}
// {'w': value}
std::string dict_w(const std::string& value) { return "}(" + str("w") + value + "u"; }
// A whole pickle: protocol 2, the ops, STOP.
std::string program(const std::string& ops) { return "\x80\x02" + ops + "."; }
}  // namespace pickle

// A torch.save zip archive: data.pkl and the storages' records under data/.
void write_torch_zip(const std::string& path, const std::string& pkl,
                     const std::vector<std::pair<std::string, std::string>>& storages, bool compress = false) {
  caffe2::serialize::PyTorchStreamWriter w(path);
  w.writeRecord("data.pkl", pkl.data(), pkl.size());
  w.writeRecord("byteorder", "little", 6);
  for (const auto& [key, bytes] : storages) w.writeRecord("data/" + key, bytes.data(), bytes.size(), compress);
  w.writeEndOfFile();
}

// A torch.save file in the legacy layout: magic number, protocol version 1001, sys_info, the object, its storage keys,
// then each storage's element count and bytes.
void write_torch_legacy(const std::string& path, const std::string& object_pkl,
                        const std::vector<std::tuple<std::string, int64_t, std::string>>& storages) {
  using namespace pickle;
  std::string keys = "(", data;
  for (const auto& [key, numel, bytes] : storages) {
    keys += str(key);
    data += le(static_cast<uint64_t>(numel), 8) + bytes;
  }
  spit(path, program("\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19") + program("M\xe9\x03") +
                 program("}(" + str("little_endian") + "\x88u") + object_pkl + program(keys + "l") + data);
}

// Writes the pickle `ops` in both layouts, with a float32 storage "0" of `floats` zeros when `floats` > 0; returns the
// two paths.
std::vector<std::string> write_both_layouts(const TempDir& dir, const std::string& name, const std::string& ops,
                                            int64_t floats = 0) {
  const std::string bytes(4 * floats, '\0');
  std::vector<std::pair<std::string, std::string>> zip;
  std::vector<std::tuple<std::string, int64_t, std::string>> legacy;
  if (floats > 0) {
    zip.emplace_back("0", bytes);
    legacy.emplace_back("0", floats, bytes);
  }
  write_torch_zip(dir / (name + "_zip.pt"), pickle::program(ops), zip);
  write_torch_legacy(dir / (name + "_legacy.pt"), pickle::program(ops), legacy);
  return {dir / (name + "_zip.pt"), dir / (name + "_legacy.pt")};
}

TEST(TorchFile, RefusesNestingDeeperThanPythonWrites) {
  TempDir dir("torchfile_deep");
  // 200000 nested lists in 400 KB ([[[...]]]: EMPTY_LIST 200000 times, then APPEND), and 400000 nested 1-tuples.
  const std::string lists = std::string(200000, ']') + std::string(199999, 'a');
  const std::string tuples = "N" + std::string(400000, '\x85');
  for (const auto& ops : {lists, tuples})
    for (const auto& path : write_both_layouts(dir, "deep", ops)) {
      SCOPED_TRACE(path);
      expect_input_error(load_torch_file, path, "nested deeper than 1000 levels");
    }
  // Python's own limit is its recursion limit, which torch.save reaches long before 1000 levels: 100 load.
  const std::string ok = std::string(100, ']') + std::string(99, 'a');
  for (const auto& path : write_both_layouts(dir, "ok", ok)) EXPECT_EQ(load_torch_file(path)->items.size(), 1u);
}

TEST(TorchFile, RefusesAContainerThatContainsItself) {
  TempDir dir("torchfile_cycle");
  // l = []; l.append(l)  and  a = []; b = [a]; a.append(b)  (memo 0 = a, memo 1 = b)
  for (const std::string& ops : {"]q\x00h\x00"s + "a", "]q\x00]q\x01h\x00"s + "aa"})
    for (const auto& path : write_both_layouts(dir, "cycle", ops)) {
      SCOPED_TRACE(path);
      expect_input_error(load_torch_file, path, "contains itself");
    }
}

TEST(TorchFile, DeepValuesAreFreedWithoutRecursion) {
  // A chain of a million one-item lists, built directly: freeing it must not take a stack frame per level.
  auto root = std::make_shared<PyValue>();
  PyValue* at = root.get();
  for (int i = 0; i < 1000000; ++i) {
    at->kind = PyValue::Kind::List;
    at->items.push_back(std::make_shared<PyValue>());
    at = at->items.back().get();
  }
  root.reset();
  SUCCEED();
}

TEST(TorchFile, StoragesAreReadOncePerKeyAndShared) {
  TempDir dir("torchfile_shared");
  // One 1 KiB storage, its persistent id memoized and referenced 100000 times: one storage, not 100 MB of copies.
  using namespace pickle;
  std::string refs;
  for (int i = 0; i < 100000; ++i) refs += "h\x00Q"s;
  const std::string ops = "](" + storage_id("0", 256) + "q\x00"s + "0" + refs + "e";
  write_torch_zip(dir / "refs.pt", program(ops), {{"0", std::string(1024, '\0')}});
  auto root = load_torch_file(dir / "refs.pt");
  ASSERT_EQ(root->items.size(), 100000u);
  for (const auto& v : root->items) ASSERT_TRUE(v->tensor.is_alias_of(root->items[0]->tensor));
}

TEST(TorchFile, RefusesStoragesLargerThanTheFile) {
  TempDir dir("torchfile_bomb");
  // 64 MiB of zeros, deflated in the archive to about 64 KB: a file may not ask for more bytes than it has.
  const int64_t numel = int64_t{1} << 24;
  using namespace pickle;
  write_torch_zip(dir / "bomb.pt", program(dict_w(tensor(storage_id("0", numel) + "Q", 0, {numel}, {1}))),
                  {{"0", std::string(4 * numel, '\0')}}, /*compress=*/true);
  ASSERT_LT(std::filesystem::file_size(dir / "bomb.pt"), 1u << 20);
  expect_input_error(load_torch_file, dir / "bomb.pt", "more than the file's");
}

TEST(TorchFile, RefusesSizesThatOverflow) {
  TempDir dir("torchfile_overflow");
  using namespace pickle;
  // A tensor view whose element count and last offset wrap: 3 x 6148914691236517206 elements is 2^64 + 2.
  const std::string view = dict_w(tensor(storage_id("0", 4) + "Q", 0, {3, 6148914691236517206}, {1, 0}));
  for (const auto& path : write_both_layouts(dir, "view", view, 4)) {
    SCOPED_TRACE(path);
    expect_input_error(load_torch_file, path, "too large");
  }
  // A storage of 2^61 doubles: 2^64 bytes, 0 once wrapped, with 0 bytes of data in the file.
  const int64_t huge = int64_t{1} << 61;
  const std::string doubles =
      "(" + str("storage") + global("torch", "DoubleStorage") + str("0") + str("cpu") + integer(huge) + "tQ";
  write_torch_zip(dir / "storage_zip.pt", program(dict_w(tensor(doubles, 0, {huge}, {1}))), {{"0", ""}});
  expect_input_error(load_torch_file, dir / "storage_zip.pt", "tensor storage data/0");
  write_torch_legacy(dir / "storage_legacy.pt", program(dict_w(tensor(doubles, 0, {huge}, {1}))), {{"0", huge, ""}});
  expect_input_error(load_torch_file, dir / "storage_legacy.pt", "storage 0");
}

// ---------------------------------------------------------------------------------------------------------------------
// torchcfm's names

UNetConfig torchcfm_cifar10() {  // torchcfm examples/images/cifar10/train_cifar10.py
  UNetConfig c;
  c.model_channels = 128;
  c.num_res_blocks = 2;
  c.channel_mult = {1, 2, 2, 2};
  c.attention_resolutions = {16};
  c.num_heads = 4;
  c.num_head_channels = 64;
  c.dropout = 0.1;
  return c;
}

TEST(TorchcfmNames, CifarRecipeHasTorchcfmsParameterCountAndLayout) {
  auto net = make_unet_velocity(torchcfm_cifar10(), {3, 32, 32});
  auto state = to_torchcfm_state(*net, /*null_label=*/false);
  int64_t count = 0;
  std::set<std::string> names;
  for (const auto& [name, t] : state) {
    count += t.numel();
    names.insert(name);
  }
  EXPECT_EQ(names.size(), state.size());  // one torchcfm name per fm parameter
  EXPECT_EQ(count, 35746307);             // torchcfm's README figure for this model
  // ADM's layout: stem conv, downsample op at the end of level 0, attention in level 1 (16x16), the upsampler of a
  // decoder block with attention at index 2, one without at index 1, conv1d attention projections.
  for (const char* n : {"input_blocks.0.0.weight", "input_blocks.3.0.op.weight", "input_blocks.4.1.qkv.weight",
                        "input_blocks.4.0.skip_connection.weight", "middle_block.1.proj_out.bias",
                        "middle_block.2.out_layers.3.weight", "output_blocks.5.1.conv.weight",
                        "output_blocks.8.2.conv.weight", "output_blocks.8.1.norm.weight", "time_embed.2.bias",
                        "out.0.weight", "out.2.bias"})
    EXPECT_TRUE(names.count(n)) << n;
  for (const auto& [name, t] : state)
    if (name.find("qkv.weight") != std::string::npos) EXPECT_EQ(t.dim(), 3) << name;
}

// ---------------------------------------------------------------------------------------------------------------------
// fm export -> Python (torchcfm + safetensors)

// Gives every parameter (the zero-initialised output layers and the null-label row included) a random value.
void randomize(torch::nn::Module& m, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard g;
  for (auto& p : m.parameters()) p.add_(0.05 * torch::randn_like(p));
}

std::string write_checkpoint(const std::string& path, const nlohmann::json& cfg_json, const std::vector<int64_t>& shape) {
  Config cfg = config_from_json(cfg_json, "test");
  auto model = make_velocity_field(cfg.model, shape);
  auto ema = make_velocity_field(cfg.model, shape);
  randomize(*model, 1);
  randomize(*ema, 2);
  save_checkpoint(path, {&cfg, 7, shape, DataIdentity{}, model.get(), ema.get(), nullptr, nullptr});
  return path;
}

// Exports the EMA weights of dir/ckpt.pt (a U-Net for 3x16x16 data) to dir/model.safetensors, loads them into torchcfm's
// UNetModelWrapper built from the file's metadata (tests/ref/interop_ref.py export) and expects torchcfm's outputs to
// be fm's on random inputs. Skips the test when torchcfm is not installed.
void expect_export_runs_in_torchcfm(const TempDir& dir) {
  auto r = test::run(test::fm_binary() + " export --checkpoint " + (dir / "ckpt.pt") + " --out " +
                     (dir / "model.safetensors"));
  ASSERT_EQ(r.code, 0) << r.output;
  CheckpointReader ck(dir / "ckpt.pt", torch::kCPU);
  auto net = make_velocity_field(ck.config().model, ck.sample_shape());
  ck.load_module("ema", *net);  // --weights defaults to ema
  net->eval();
  torch::manual_seed(3);
  auto x = torch::randn({3, 3, 16, 16});
  auto t = torch::rand({3});
  std::vector<std::pair<std::string, torch::Tensor>> io = {{"x", x}, {"t", t}};
  torch::Tensor y;
  if (net->num_classes() > 0) {
    // The last label is the null label (classifier-free guidance's unconditional model) where the export keeps it.
    const bool null_label = keeps_null_label(ck.config().model.unet);
    y = torch::tensor({int64_t{0}, net->num_classes() - (null_label ? 0 : 1), int64_t{1}}, torch::kLong);
    const auto meta = read_safetensors(dir / "model.safetensors").metadata;
    EXPECT_EQ(meta.count("fm_null_label") ? meta.at("fm_null_label") : "", null_label ? std::to_string(net->num_classes()) : "");
    io.emplace_back("y", y);
  }
  write_npz(dir / "io.npz", io);
  RUN_REF("export", dir.str());
  torch::NoGradGuard g;
  auto v = (*net)(t, x, y);
  auto ref = read_npz(dir / "ref.npz").at("out");
  ASSERT_EQ(v.sizes(), ref.sizes());
  EXPECT_GT(ref.abs().max().item<float>(), 0.1f);  // a real signal, not a zero output layer
  EXPECT_LT(max_abs_diff(v, ref), 1e-4);
}

TEST(Export, UNetLoadsIntoTorchcfmWithTheSameOutputs) {
  struct Case {
    std::string name;
    nlohmann::json unet;
  };
  std::vector<Case> cases = {
      {"unconditional",
       {{"model_channels", 32}, {"num_res_blocks", 2}, {"channel_mult", {1, 2}}, {"attention_resolutions", {16, 8}},
        {"num_heads", 4}, {"num_head_channels", 16}, {"dropout", 0.1}}},
      {"class_conditional",
       {{"model_channels", 32}, {"num_res_blocks", 1}, {"channel_mult", {1, 1, 2}}, {"attention_resolutions", {8}},
        {"num_heads", 2}, {"num_head_channels", -1}, {"use_scale_shift_norm", true}, {"resblock_updown", true},
        {"num_classes", 4}}},
      {"class_conditional_without_label_dropout",
       {{"model_channels", 32}, {"num_res_blocks", 1}, {"channel_mult", {1, 2}}, {"attention_resolutions", {8}},
        {"num_heads", 2}, {"num_head_channels", -1}, {"num_classes", 4}, {"class_dropout", 0.0}}}};
  for (const auto& k : cases) {
    SCOPED_TRACE(k.name);
    TempDir dir("export");
    nlohmann::json cfg = {{"model", {{"type", "unet"}, {"unet", k.unet}}}};
    write_checkpoint(dir / "ckpt.pt", cfg, {3, 16, 16});
    expect_export_runs_in_torchcfm(dir);
    if (HasFatalFailure() || IsSkipped()) return;
  }
}

// The shapes demo's U-Net has no attention resolution, so attention only in its middle block: torchcfm builds that
// from a resolution no level has. Exported, run in torchcfm, and imported back by fm import, it gives the same outputs.
TEST(Export, ShapesDemoUNetWithoutAttentionLevelsRoundTrips) {
  TempDir dir("export_shapes");
  auto demo = nlohmann::json::parse(slurp(std::string(FM_SOURCE_DIR) + "/configs/shapes_cpu.json"));
  ASSERT_TRUE(demo["model"]["unet"]["attention_resolutions"].empty());
  write_checkpoint(dir / "ckpt.pt", {{"model", demo["model"]}}, {3, 16, 16});
  expect_export_runs_in_torchcfm(dir);
  if (HasFatalFailure() || IsSkipped()) return;
  {
    SafeTensors st = read_safetensors(dir / "model.safetensors");
    EXPECT_EQ(nlohmann::json::parse(st.metadata.at("torchcfm_unet_wrapper"))["attention_resolutions"], "32");
  }
  auto r = test::run(test::fm_binary() + " import --weights " + (dir / "model.safetensors") + " --out " +
                     (dir / "imported.pt"));
  ASSERT_EQ(r.code, 0) << r.output;
  CheckpointReader exported(dir / "ckpt.pt", torch::kCPU), imported(dir / "imported.pt", torch::kCPU);
  auto want = make_velocity_field(exported.config().model, {3, 16, 16});
  auto got = make_velocity_field(imported.config().model, imported.sample_shape());
  exported.load_module("ema", *want);
  imported.load_module("ema", *got);
  auto got_params = got->named_parameters();
  for (const auto& p : want->named_parameters()) {
    auto w = p.value(), g = got_params[p.key()];
    EXPECT_TRUE(torch::equal(w, g)) << p.key();  // the demo trains with label dropout: the null label's row too
  }
}

TEST(Export, MlpUsesFmNamesAndUnsupportedUNetsAreRefused) {
  TempDir dir("export_mlp");
  nlohmann::json cfg = {{"model", {{"type", "mlp"}, {"mlp", {{"hidden", 16}, {"depth", 2}}}}}};
  write_checkpoint(dir / "mlp.pt", cfg, {2});
  auto r = test::run(test::fm_binary() + " export --weights raw --checkpoint " + (dir / "mlp.pt") + " --out " +
                     (dir / "mlp.safetensors"));
  ASSERT_EQ(r.code, 0) << r.output;
  CheckpointReader ck(dir / "mlp.pt", torch::kCPU);
  auto net = make_velocity_field(ck.config().model, {2});
  ck.load_module("model", *net);
  auto st = read_safetensors(dir / "mlp.safetensors");
  auto params = net->named_parameters();
  ASSERT_EQ(st.tensors.size(), params.size());
  for (const auto& [name, t] : st.tensors) {
    ASSERT_TRUE(params.contains(name)) << name;
    EXPECT_TRUE(torch::equal(t, params[name])) << name;
  }
  EXPECT_EQ(st.metadata.at("fm_weights"), "raw");
  EXPECT_EQ(st.metadata.at("fm_step"), "7");
  EXPECT_EQ(nlohmann::json::parse(st.metadata.at("fm_config"))["model"]["mlp"]["hidden"], 16);

  nlohmann::json pooled = {{"model",
                            {{"type", "unet"},
                             {"unet", {{"model_channels", 32}, {"channel_mult", {1, 2}}, {"num_res_blocks", 1},
                                       {"attention_resolutions", {8}}, {"num_head_channels", 32},
                                       {"conv_resample", false}}}}}};
  write_checkpoint(dir / "pooled.pt", pooled, {3, 16, 16});
  r = test::run(test::fm_binary() + " export --checkpoint " + (dir / "pooled.pt") + " --out " +
                (dir / "pooled.safetensors"));
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("model.unet.conv_resample"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "pooled.safetensors"));
}

// ---------------------------------------------------------------------------------------------------------------------
// torchcfm checkpoint -> fm import

// The fm config of the model tests/ref/interop_ref.py builds with torchcfm, on 16x16 shapes (3 classes).
nlohmann::json imported_config() {
  return {{"data", {{"format", "shapes"}, {"path", "64"}, {"resolution", 16}}},
          {"model",
           {{"type", "unet"},
            {"unet", {{"model_channels", 32}, {"num_res_blocks", 1}, {"channel_mult", {1, 2}},
                      {"attention_resolutions", {8}}, {"num_heads", 2}, {"num_head_channels", 16},
                      {"use_scale_shift_norm", true}, {"resblock_updown", true}, {"dropout", 0.1},
                      {"num_classes", 3}}}}},
          {"train", {{"steps", 125}, {"batch_size", 4}, {"log_every", 1}, {"ckpt_every", 1000}}},
          {"sample", {{"solver", "euler"}, {"steps", 2}}}};
}

TEST(Import, TorchcfmCheckpointsGiveTorchcfmsVelocity) {
  TempDir dir("import");
  RUN_REF("torchcfm", dir.str());
  spit(dir / "cfg.json", imported_config().dump());
  auto io = read_npz(dir / "io.npz");
  struct Case {
    std::string file;
    int64_t step;
    std::string raw_out;  // the output the raw ("model") weights must give
  };
  for (const auto& k : std::vector<Case>{{"ckpt_zip.pt", 123, "out_net"},
                                         {"ckpt_legacy.pt", 123, "out_net"},
                                         {"ckpt_parallel.pt", 123, "out_net"},
                                         {"ema.safetensors", 0, "out_ema"}}) {
    SCOPED_TRACE(k.file);
    auto r = test::run(test::fm_binary() + " import --from torchcfm --weights " + (dir / k.file) + " --config " +
                       (dir / "cfg.json") + " --out " + (dir / "imported.pt"));
    ASSERT_EQ(r.code, 0) << r.output;
    CheckpointReader ck(dir / "imported.pt", torch::kCPU);
    EXPECT_EQ(ck.step(), k.step);
    EXPECT_EQ(ck.sample_shape(), (std::vector<int64_t>{3, 16, 16}));
    for (const auto& [key, out] : std::vector<std::pair<std::string, std::string>>{{"model", k.raw_out},
                                                                                  {"ema", "out_ema"}}) {
      SCOPED_TRACE(key);
      auto net = make_velocity_field(ck.config().model, ck.sample_shape());
      ck.load_module(key, *net);
      net->eval();
      torch::NoGradGuard g;
      auto v = (*net)(io.at("t"), io.at("x"), io.at("y"));
      EXPECT_GT(io.at(out).abs().max().item<float>(), 0.1f);
      EXPECT_LT(max_abs_diff(v, io.at(out)), 1e-4);
    }
  }
  // The imported checkpoint is a full fm checkpoint: fm sample draws from it and fm train resumes it (one step).
  auto r = test::run(test::fm_binary() + " import --weights " + (dir / "ckpt_zip.pt") + " --config " +
                     (dir / "cfg.json") + " --out " + (dir / "run/checkpoints/ckpt_000000123.pt"));
  ASSERT_EQ(r.code, 0) << r.output;
  r = test::run(test::fm_binary() + " sample --checkpoint " + (dir / "run/checkpoints/ckpt_000000123.pt") +
                " --num-samples 2 --solver euler --steps 2 --class 1 --out " + (dir / "samples"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir / "samples/samples.npz"));
  r = test::run(test::fm_binary() + " train --config " + (dir / "cfg.json") + " --out " + (dir / "run") +
                " --resume auto --stop-after 124");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir / "run/checkpoints/ckpt_000000124.pt"));
}

TEST(Import, MismatchedWeightsExitTwoListingTheDifferences) {
  TempDir dir("import_bad");
  RUN_REF("torchcfm", dir.str());
  auto cfg = imported_config();
  cfg["model"]["unet"]["model_channels"] = 64;  // every conv and norm changes shape
  spit(dir / "wide.json", cfg.dump());
  auto r = test::run(test::fm_binary() + " import --weights " + (dir / "ckpt_zip.pt") + " --config " +
                     (dir / "wide.json") + " --out " + (dir / "out.pt"));
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("wrongly shaped (time_embed.0.weight Float [128, 32] (expected float [256, 64])"),
            std::string::npos)
      << r.output;
  cfg = imported_config();
  cfg["model"]["unet"]["num_res_blocks"] = 2;  // more blocks than the file has
  spit(dir / "deep.json", cfg.dump());
  r = test::run(test::fm_binary() + " import --weights " + (dir / "ckpt_zip.pt") + " --config " +
                (dir / "deep.json") + " --out " + (dir / "out.pt"));
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("ckpt_zip.pt (net_model): the tensors do not match"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" missing ("), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;  // one line
  EXPECT_FALSE(std::filesystem::exists(dir / "out.pt"));
  // Not a torch.save file at all.
  spit(dir / "junk.pt", "junk");
  r = test::run(test::fm_binary() + " import --weights " + (dir / "junk.pt") + " --config " + (dir / "deep.json") +
                " --out " + (dir / "out.pt"));
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("junk.pt: not a file written by torch.save"), std::string::npos) << r.output;
}

TEST(Import, HostileHeaderBytesGiveOnePrintableLineAndExitTwo) {
  TempDir dir("import_bytes");
  spit(dir / "cfg.json", imported_config().dump());
  struct Case {
    std::string header, shown;  // a header and what the error must show of it
  };
  for (const auto& k : std::vector<Case>{
           {"{\"w\xff\":{}}", "w\\xff"},                                               // invalid UTF-8: bad JSON
           {R"({"\u001b[2J\n":{"dtype":"Q","shape":[],"data_offsets":[0,0]}})", "\\x1b[2J\\x0a"}}) {  // controls
    SCOPED_TRACE(k.shown);
    spit(dir / "bad.safetensors", safetensors_bytes(k.header));
    auto r = test::run(test::fm_binary() + " import --weights " + (dir / "bad.safetensors") + " --config " +
                       (dir / "cfg.json") + " --out " + (dir / "out.pt"));
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_EQ(r.output.rfind("fm: error: " + (dir / "bad.safetensors") + ": ", 0), 0u) << r.output;
    EXPECT_NE(r.output.find(k.shown), std::string::npos) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;  // one line, ending the output
    EXPECT_EQ(r.output.back(), '\n');
    for (unsigned char c : r.output) EXPECT_TRUE(c == '\n' || (c >= 0x20 && c < 0x7f)) << int(c) << r.output;
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// FID weights as pytorch-fid has them

TEST(FidWeights, PytorchFidPthLoadsLikeTheExportedNpz) {
  TempDir dir("fidpth");
  RUN_REF("fidpth", dir.str());
  // The .npz path is checked against pytorch-fid's network in test_fid.cpp; the .pth files must load the very same
  // values into every parameter and BatchNorm statistic.
  auto ref = load_fid_inception(dir / "fid.npz", torch::kCPU);
  for (const char* name : {"fid_zip.pth", "fid_legacy.pth"}) {
    SCOPED_TRACE(name);
    auto net = load_fid_inception(dir / name, torch::kCPU);
    auto want = ref->named_parameters();
    int64_t n = 0;
    for (const auto& p : net->named_parameters()) {
      EXPECT_TRUE(torch::equal(p.value(), want[p.key()])) << p.key();
      ++n;
    }
    auto want_buffers = ref->named_buffers();
    for (const auto& b : net->named_buffers())
      if (b.key().find("num_batches_tracked") == std::string::npos)
        EXPECT_TRUE(torch::equal(b.value(), want_buffers[b.key()])) << b.key();
    EXPECT_GT(n, 200);
  }
  // A torch.save file that is not the FID network: rejected with the lists, not crashed on.
  auto r = test::run(std::string(FM_PYTHON_EXE) + " -c \"import torch; torch.save({'w': torch.ones(2)}, '" +
                     (dir / "other.pth") + "')\"");
  ASSERT_EQ(r.code, 0) << r.output;
  try {
    load_fid_inception(dir / "other.pth", torch::kCPU);
    ADD_FAILURE() << "accepted other.pth";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("1 unexpected"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// TensorBoard event files

TEST(Crc32c, MatchesTheStandardCheckValues) {
  const std::string digits = "123456789";
  EXPECT_EQ(crc32c(digits.data(), digits.size()), 0xe3069283u);  // the CRC-32C check value
  const std::string zeros(32, '\0'), ones(32, '\xff');
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8a9136aau);  // RFC 3720, B.4
  EXPECT_EQ(crc32c(ones.data(), ones.size()), 0x62a8ab43u);
  EXPECT_EQ(crc32c(nullptr, 0), 0u);
}

// The files TensorBoard's reader (tests/ref/tensorboard_read.py) makes of an event file: events.json and the images.
struct TbRead {
  nlohmann::json events;
  std::string dir;
};
#define READ_TB(file, dir, result)                                                                                  \
  do {                                                                                                             \
    auto r_ = test::run(std::string(FM_PYTHON_EXE) + " " + FM_SOURCE_DIR + "/tests/ref/tensorboard_read.py " +     \
                        (file) + " " + (dir));                                                                     \
    if (r_.code == 77) GTEST_SKIP() << "tensorboard is not installed in the venv";                                 \
    ASSERT_EQ(r_.code, 0) << r_.output;                                                                            \
    result = TbRead{nlohmann::json::parse(slurp(std::string(dir) + "/events.json")), (dir)};                       \
  } while (0)

std::string only_event_file(const std::string& dir) {
  std::string found;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().rfind("events.out.tfevents.", 0) == 0) {
      EXPECT_TRUE(found.empty()) << "more than one event file in " << dir;
      found = e.path().string();
    }
  return found;
}

TEST(TensorBoard, ScalarsAndImagesReadBackAtTheirStepsAndACutFileUpToTheCut) {
  TempDir dir("tb");
  std::filesystem::create_directories(dir / "read");
  auto img = torch::arange(5 * 7 * 3).reshape({5, 7, 3}).to(torch::kUInt8);
  write_png(dir / "grid.png", img);
  std::string file;
  {
    TensorBoardLog tb(dir.str());
    file = tb.path();
    tb.scalars({{"step", 10}, {"loss", 0.5}, {"lr", 2e-4}, {"note", "not a number"}});
    tb.image("samples", dir / "grid.png", 10);
    tb.scalars({{"step", 20}, {"loss", 0.25}, {"lr", 1e-4}, {"skipped_steps", 3}});
  }
  EXPECT_EQ(only_event_file(dir.str()), file);
  TbRead r;
  READ_TB(file, dir / "read", r);
  EXPECT_EQ(r.events["records"], 4);  // file_version, 2 scalar events, 1 image event: every CRC accepted
  EXPECT_EQ(r.events["file_version"], "brain.Event:2");
  std::map<std::pair<std::string, int64_t>, double> scalars;
  for (const auto& s : r.events["scalars"]) scalars[{s[0].get<std::string>(), s[1].get<int64_t>()}] = s[2];
  const std::map<std::pair<std::string, int64_t>, double> want = {
      {{"loss", 10}, 0.5}, {{"lr", 10}, 2e-4}, {{"loss", 20}, 0.25}, {{"lr", 20}, 1e-4}, {{"skipped_steps", 20}, 3}};
  ASSERT_EQ(scalars.size(), want.size()) << r.events.dump();
  for (const auto& [k, v] : want) EXPECT_NEAR(scalars.at(k), v, 1e-7 * std::abs(v)) << k.first << " " << k.second;
  ASSERT_EQ(r.events["images"].size(), 1u);
  const auto& im = r.events["images"][0];
  EXPECT_EQ(im[0], "samples");
  EXPECT_EQ(im[1], 10);
  EXPECT_EQ(im[2], 7);  // width
  EXPECT_EQ(im[3], 5);  // height
  EXPECT_EQ(slurp(dir / ("read/" + im[4].get<std::string>())), slurp(dir / "grid.png"));

  // A killed run: the file ends inside its last record. Everything before that record still reads.
  const auto bytes = slurp(file);
  std::filesystem::create_directories(dir / "cut");
  spit(dir / "cut/events.out.tfevents.1.cut", bytes.substr(0, bytes.size() - 10));
  std::filesystem::create_directories(dir / "read_cut");
  READ_TB(dir / "cut/events.out.tfevents.1.cut", dir / "read_cut", r);
  EXPECT_EQ(r.events["records"], 3);
  EXPECT_EQ(r.events["scalars"].size(), 2u);  // loss and lr at step 10
  EXPECT_EQ(r.events["images"].size(), 1u);
}

TEST(TensorBoard, TrainWritesItsMetricsAndGrids) {
  TempDir dir("tb_train");
  nlohmann::json cfg = {
      {"data", {{"format", "shapes"}, {"path", "32"}, {"resolution", 8}}},
      {"model",
       {{"type", "unet"},
        {"unet", {{"model_channels", 32}, {"num_res_blocks", 1}, {"channel_mult", {1}},
                  {"attention_resolutions", nlohmann::json::array()}, {"num_head_channels", 32},
                  {"num_classes", 3}}}}},
      {"train", {{"steps", 4}, {"batch_size", 4}, {"log_every", 2}, {"ckpt_every", 100}, {"sample_every", 2}}},
      {"sample", {{"solver", "euler"}, {"steps", 1}}}};
  spit(dir / "cfg.json", cfg.dump());
  auto r = test::run(test::fm_binary() + " train --config " + (dir / "cfg.json") + " --out " + (dir / "run"));
  ASSERT_EQ(r.code, 0) << r.output;
  std::filesystem::create_directories(dir / "read");
  TbRead tb;
  READ_TB(only_event_file(dir / "run"), dir / "read", tb);
  // Every number of every metrics.jsonl line, at its step.
  std::map<std::pair<std::string, int64_t>, double> scalars;
  for (const auto& s : tb.events["scalars"]) scalars[{s[0].get<std::string>(), s[1].get<int64_t>()}] = s[2];
  std::istringstream lines(slurp(dir / "run/metrics.jsonl"));
  std::string line;
  size_t expected = 0;
  while (std::getline(lines, line)) {
    auto m = nlohmann::json::parse(line);
    for (const auto& [k, v] : m.items()) {
      if (k == "step") continue;
      ++expected;
      auto it = scalars.find({k, m["step"].get<int64_t>()});
      ASSERT_NE(it, scalars.end()) << k << " at step " << m["step"];
      EXPECT_NEAR(it->second, v.get<double>(), 1e-6 * std::abs(v.get<double>()) + 1e-30) << k;
    }
  }
  EXPECT_EQ(scalars.size(), expected);
  EXPECT_GE(expected, 2u * 5u);  // loss, lr, grad_norm, throughput, memory, ... at steps 2 and 4
  // The grid at step 2 and the final samples at step 4, byte for byte.
  ASSERT_EQ(tb.events["images"].size(), 2u) << tb.events.dump();
  std::map<int64_t, std::string> images;
  for (const auto& im : tb.events["images"]) images[im[1].get<int64_t>()] = im[4];
  EXPECT_EQ(slurp(dir / ("read/" + images.at(2))), slurp(dir / "run/grid_000000002.png"));
  EXPECT_EQ(slurp(dir / ("read/" + images.at(4))), slurp(dir / "run/samples.png"));

  // train.tensorboard=false writes none.
  r = test::run(test::fm_binary() + " train --config " + (dir / "cfg.json") + " --set train.tensorboard=false" +
                " --set train.steps=2 --out " + (dir / "quiet"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(only_event_file(dir / "quiet"), "");
}

}  // namespace
}  // namespace fm
