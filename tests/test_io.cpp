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
  expect_error(d / "trunc.npz", "no end-of-central-directory");
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
