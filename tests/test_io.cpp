#include <fstream>

#include <gtest/gtest.h>

#include "io/image.h"
#include "io/npy.h"
#include "test_util.h"
#include "util/error.h"

using fm::test::TempDir;

TEST(Io, NpzRoundTripsThroughNumpy) {
  TempDir d;
  auto u8 = torch::randint(0, 256, {3, 4, 5, 3}, torch::kUInt8);
  auto f32 = torch::randn({7, 2});
  fm::write_npz(d / "a.npz", {{"arr_0", u8}, {"f", f32}});
  // numpy reads ours and writes a compressed file of its own from it (deflate members, zip64 local headers).
  auto r = fm::test::run(fm::test::python() + " -c \"import numpy as np; z = np.load('" + d / "a.npz" +
                         "'); a = z['arr_0']; f = z['f']; assert a.dtype == np.uint8 and a.shape == (3, 4, 5, 3); "
                         "assert f.dtype == np.float32 and f.shape == (7, 2); "
                         "np.savez_compressed('" + d / "b.npz" + "', arr_0=a, f=f.astype(np.float64), "
                         "i=np.arange(5)); print(int(a.sum()))\"");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(std::stoll(r.output), u8.sum().item<int64_t>());
  auto back = fm::read_npz(d / "b.npz");
  EXPECT_TRUE(torch::equal(back.at("arr_0"), u8));
  EXPECT_EQ(back.at("f").scalar_type(), torch::kFloat64);
  EXPECT_TRUE(torch::equal(back.at("f").to(torch::kFloat32), f32));
  EXPECT_TRUE(torch::equal(back.at("i"), torch::arange(5)));
}

TEST(Io, NpyRoundTrip) {
  TempDir d;
  auto x = torch::randn({2, 3}, torch::kFloat64);
  fm::write_npy(d / "x.npy", x);
  EXPECT_TRUE(torch::equal(fm::read_npy(d / "x.npy"), x));
}

TEST(Io, BadFilesGiveClearErrors) {
  TempDir d;
  fm::write_npz(d / "a.npz", {{"arr_0", torch::zeros({100}, torch::kUInt8)}});
  std::ifstream in(d / "a.npz", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  auto expect_error = [&](const std::string& path, const std::string& what) {
    try {
      fm::read_npz(path, {"arr_0"});
      ADD_FAILURE() << "no error for " << what;
    } catch (const fm::InputError& e) {
      std::string m = e.what();
      EXPECT_NE(m.find(path), std::string::npos) << m;
      EXPECT_NE(m.find(what), std::string::npos) << m;
    }
  };
  std::ofstream(d / "trunc.npz", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  expect_error(d / "trunc.npz", "not a zip/.npz archive, or a truncated one");
  std::string corrupt = bytes;
  corrupt[150] ^= 0x5a;  // inside the array data
  std::ofstream(d / "crc.npz", std::ios::binary) << corrupt;
  expect_error(d / "crc.npz", "CRC mismatch");
  fm::write_npz(d / "other.npz", {{"x", torch::zeros({1})}});
  expect_error(d / "other.npz", "no array 'arr_0' (has: x)");
  const std::string complex_npy("\x93NUMPY\x01\x00\x10\x00{'descr': '<c8'}", 26);
  std::ofstream(d / "bad.npy", std::ios::binary) << complex_npy;
  try {
    fm::read_npy(d / "bad.npy");
    ADD_FAILURE();
  } catch (const fm::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("unsupported dtype"), std::string::npos) << e.what();
  }
}

namespace {

// A .npy image with the given header dict text (format 1.0, or 2.0 for headers over 64 KiB) and `data` after it.
std::string npy_with_header(const std::string& dict, const std::string& data, int major = 1) {
  std::string out("\x93NUMPY", 6);
  out.push_back(static_cast<char>(major));
  out.push_back('\0');
  const size_t n = dict.size();
  out.push_back(static_cast<char>(n & 0xff));
  out.push_back(static_cast<char>((n >> 8) & 0xff));
  if (major >= 2) {
    out.push_back(static_cast<char>((n >> 16) & 0xff));
    out.push_back(static_cast<char>((n >> 24) & 0xff));
  }
  return out + dict + data;
}

torch::Tensor parse(const std::string& bytes) {
  return fm::parse_npy(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "x.npy");
}

std::string parse_error(const std::string& bytes) {
  try {
    parse(bytes);
  } catch (const fm::InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no InputError";
  return "";
}

}  // namespace

TEST(Io, NpyHeaderIsBoundedAndParsedWithoutRegex) {
  // A long shape tuple (format 2.0 allows 4 GiB headers) must neither overflow the stack of a recursive parser nor be
  // read at all: headers longer than numpy's own limit are refused outright.
  std::string shape;
  for (int i = 0; i < 400000; ++i) shape += "1, ";
  auto msg = parse_error(npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (" + shape + "), }\n",
                                         std::string(4, '\0'), 2));
  EXPECT_NE(msg.find("x.npy: .npy header length 1200056 is over numpy's limit of 10000 bytes"), std::string::npos)
      << msg;

  // What numpy may legally write parses: other key orders, double quotes, no trailing comma, Python 2 longs, and
  // padding up to the limit.
  const std::string six_floats(6 * 4, '\0');
  auto t = parse(npy_with_header("{\"shape\": (2L, 3L), 'fortran_order':False,'descr':\"<f4\"}" +
                                     std::string(9000, ' ') + "\n",
                                 six_floats));
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t.scalar_type(), torch::kFloat32);
  t = parse(npy_with_header("{'descr': '<i8', 'fortran_order': False, 'shape': (), }\n", std::string(8, '\x07')));
  EXPECT_EQ(t.dim(), 0);
  EXPECT_EQ(t.item<int64_t>(), 0x0707070707070707);
  t = parse(npy_with_header("{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }\n", "abc"));
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{3}));
  EXPECT_EQ(t[2].item<int64_t>(), 'c');

  // Malformed or hostile headers: one clear line each, never a crash or a huge allocation.
  const std::pair<std::string, std::string> cases[] = {
      {"{'descr': '<f4', 'fortran_order': False}", "no shape"},
      {"{'descr': '<f4', 'shape': (1,)}", "no fortran_order"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}", "unexpected key 'extra'"},
      {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}", "structured arrays are not supported"},
      {"{'descr': '<f4, 'fortran_order': False, 'shape': (1,)}", "expected ','"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", "expected a dimension"},
      {"{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,)}", "expected True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1234567890123456789,)}", "more than 18 digits"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (999999999999999999, 999999999999999999, 0)}", "is too large"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2)}", "data holds 4 bytes but shape (2, 2)"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", "malformed .npy header (expected ','"},
      {"{'descr': '<f4', 'fortran_order': True, 'shape': (1,)}", "Fortran-ordered"},
  };
  for (const auto& [dict, want] : cases) {
    msg = parse_error(npy_with_header(dict, std::string(4, '\0')));
    EXPECT_NE(msg.find("x.npy: "), std::string::npos) << msg;
    EXPECT_NE(msg.find(want), std::string::npos) << dict << " -> " << msg;
  }
  msg = parse_error(npy_with_header("{'descr': '|b1', 'fortran_order': False, 'shape': (3,)}", std::string("\1\0\2", 3)));
  EXPECT_NE(msg.find("bool array holds a byte other than 0 and 1"), std::string::npos) << msg;
  msg = parse_error(npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}", "", 1).substr(0, 20));
  EXPECT_NE(msg.find("truncated .npy header"), std::string::npos) << msg;
}

TEST(Io, NpzMembersWhoseSizesLieAreRefused) {
  // libzip reads the container; the declared sizes are checked before a buffer is sized from them.
  TempDir d;
  fm::write_npz(d / "a.npz", {{"arr_0", torch::arange(64, torch::kUInt8)}});
  std::ifstream in(d / "a.npz", std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  // Central directory entry: signature PK\1\2, uncompressed size at offset 24 (ours are stored: both sizes equal).
  const size_t cd = bytes.find(std::string("PK\x01\x02", 4));
  ASSERT_NE(cd, std::string::npos);
  std::string lie = bytes;
  lie[cd + 24 + 3] = '\x7f';  // claims about 2 GiB
  std::ofstream(d / "lie.npz", std::ios::binary) << lie;
  try {
    fm::read_npz(d / "lie.npz");
    ADD_FAILURE() << "no error";
  } catch (const fm::InputError& e) {
    EXPECT_NE(std::string(e.what()).find(d / "lie.npz"), std::string::npos) << e.what();
  }
  std::ofstream(d / "empty.npz", std::ios::binary) << "";
  try {
    fm::npz_keys(d / "empty.npz");
    ADD_FAILURE() << "no error";
  } catch (const fm::InputError& e) {
    EXPECT_NE(std::string(e.what()).find("empty file"), std::string::npos) << e.what();
  }
}

TEST(Io, GridTilesImagesAndEnlargesSmallOnes) {
  auto imgs = torch::arange(5 * 4 * 4 * 3).remainder(251).to(torch::kUInt8).view({5, 4, 4, 3});
  // Large enough: tiled as they are, 3 per row, 2 white pixels around each.
  auto g = fm::make_grid(imgs, 3, 2, 4);
  ASSERT_EQ(g.sizes(), (std::vector<int64_t>{2 * 6 + 2, 3 * 6 + 2, 3}));
  EXPECT_TRUE(torch::equal(g.narrow(0, 8, 4).narrow(1, 2, 4), imgs[3]));  // row 1, column 0
  EXPECT_TRUE(torch::equal(g.narrow(0, 8, 6).narrow(1, 14, 6), torch::full({6, 6, 3}, 255, torch::kUInt8)));  // empty
  // 4x4 images with cells of at least 10: each pixel becomes a 2x2 block.
  g = fm::make_grid(imgs, 3, 2, 10);
  ASSERT_EQ(g.sizes(), (std::vector<int64_t>{2 * 10 + 2, 3 * 10 + 2, 3}));
  auto cell = g.narrow(0, 12, 8).narrow(1, 2, 8);
  EXPECT_TRUE(torch::equal(cell, imgs[3].repeat_interleave(2, 0).repeat_interleave(2, 1)));
}
