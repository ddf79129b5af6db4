// Image readers (CIFAR-10 binary, ImageNet-32 npz, image folders, npz samples), the procedural shapes set, the
// load_dataset dispatch and the batch sampler over images. Every test writes its own small files in a temp dir.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>

#include <ftw.h>
#include <unistd.h>

#include <stb_image_write.h>

#include "data/batch_sampler.h"
#include "data/cifar10.h"
#include "data/dataset.h"
#include "data/image_folder.h"
#include "data/imagenet32.h"
#include "data/npz_images.h"
#include "data/shapes.h"
#include "io/npy.h"
#include "test_util.h"
#include "util/error.h"

namespace fm {
namespace {

namespace fs = std::filesystem;

using fm::test::TempDir;

void write_bytes(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// The message of the InputError `f` throws ("" and a failure when it throws none).
std::string input_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an InputError";
  return "";
}

#define EXPECT_HAS(msg, part) EXPECT_NE((msg).find(part), std::string::npos) << "message: " << (msg)

// --- CIFAR-10 ------------------------------------------------------------------------------------------------------

// Pixel (c, y, x) of the image with global index i: distinct per channel, row and column, so that a swapped plane
// or a transposed image shows.
uint8_t cifar_px(int64_t i, int64_t c, int64_t y, int64_t x) { return static_cast<uint8_t>((i * 7 + c * 50 + y * 3 + x * 5) % 256); }
int64_t cifar_label(int64_t i) { return (i * 3 + 1) % 10; }

// `count` records starting at global index `first`, written byte by byte in the documented layout.
std::string cifar_records(int64_t first, int64_t count) {
  std::string s;
  for (int64_t i = first; i < first + count; ++i) {
    s.push_back(static_cast<char>(cifar_label(i)));
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t y = 0; y < 32; ++y)
        for (int64_t x = 0; x < 32; ++x) s.push_back(static_cast<char>(cifar_px(i, c, y, x)));
  }
  return s;
}

torch::Tensor expected_cifar(int64_t first, int64_t count) {
  auto i = torch::arange(first, first + count).view({-1, 1, 1, 1});
  auto c = torch::arange(3).view({1, 3, 1, 1}), y = torch::arange(32).view({1, 1, 32, 1}),
       x = torch::arange(32).view({1, 1, 1, 32});
  return ((i * 7 + c * 50 + y * 3 + x * 5) % 256).to(torch::kUInt8);
}

// Five train batches of 2 records (global indices 0..9) and a test batch of 3 (indices 100..102).
void write_cifar(const std::string& dir) {
  for (int b = 0; b < 5; ++b) write_bytes(dir + "/data_batch_" + std::to_string(b + 1) + ".bin", cifar_records(2 * b, 2));
  write_bytes(dir + "/test_batch.bin", cifar_records(100, 3));
}

TEST(DataCifar10, PlanesLabelsAndFileOrder) {
  TempDir tmp;
  write_cifar(tmp / "cifar-10-batches-bin");
  for (const std::string& dir : {tmp / "cifar-10-batches-bin", tmp.str()}) {  // both accepted
    auto train = read_cifar10(dir, fm::Split::train);
    ASSERT_EQ(train.images.sizes(), (std::vector<int64_t>{10, 3, 32, 32}));
    EXPECT_EQ(train.images.scalar_type(), torch::kUInt8);
    EXPECT_TRUE(torch::equal(train.images, expected_cifar(0, 10)));
    EXPECT_TRUE(torch::equal(train.labels, (torch::arange(10) * 3 + 1) % 10));
    EXPECT_EQ(train.num_classes, 10);
  }
  auto test = read_cifar10(tmp.str(), fm::Split::test);
  EXPECT_TRUE(torch::equal(test.images, expected_cifar(100, 3)));
  EXPECT_TRUE(torch::equal(test.labels, (torch::arange(100, 103) * 3 + 1) % 10));
  // Spot check against the raw bytes: record 1 of data_batch_3 (global 5), G plane, row 2, column 7.
  auto raw = read_bytes(tmp / "cifar-10-batches-bin/data_batch_3.bin");
  EXPECT_EQ(read_cifar10(tmp.str(), fm::Split::train).images[5][1][2][7].item<int64_t>(),
            static_cast<uint8_t>(raw[3073 + 1 + 1024 + 2 * 32 + 7]));
}

TEST(DataCifar10, TruncatedBadLabelAndMissingFiles) {
  TempDir tmp;
  const std::string dir = tmp / "c";
  write_cifar(dir);
  write_bytes(dir + "/data_batch_3.bin", cifar_records(4, 2).substr(0, 2 * 3073 - 100));
  auto msg = input_error([&] { read_cifar10(dir, fm::Split::train); });
  EXPECT_HAS(msg, "data_batch_3.bin");
  EXPECT_HAS(msg, "not a multiple of the 3073-byte record");

  write_cifar(dir);
  auto bad = cifar_records(2, 2);
  bad[3073] = 12;  // record 1's label
  write_bytes(dir + "/data_batch_2.bin", bad);
  msg = input_error([&] { read_cifar10(dir, fm::Split::train); });
  EXPECT_HAS(msg, "data_batch_2.bin");
  EXPECT_HAS(msg, "record 1 ");
  EXPECT_HAS(msg, "label 12");

  write_cifar(dir);
  write_bytes(dir + "/test_batch.bin", "");
  msg = input_error([&] { read_cifar10(dir, fm::Split::test); });
  EXPECT_HAS(msg, "test_batch.bin");
  EXPECT_HAS(msg, "empty");

  fs::remove(dir + "/data_batch_4.bin");
  fs::remove(dir + "/data_batch_5.bin");
  msg = input_error([&] { read_cifar10(dir, fm::Split::train); });
  EXPECT_HAS(msg, "missing data_batch_4.bin, data_batch_5.bin");

  msg = input_error([&] { read_cifar10(tmp / "nowhere", fm::Split::train); });
  EXPECT_HAS(msg, "nowhere");
  EXPECT_HAS(msg, "not a directory");
}

// --- ImageNet-32 ---------------------------------------------------------------------------------------------------

// n rows of 3072 channel-major bytes for global indices first.., written as the flat array the release holds.
torch::Tensor imagenet_rows(int64_t first, int64_t n) {
  auto data = torch::empty({n, 3072}, torch::kUInt8);
  auto a = data.accessor<uint8_t, 2>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < 3072; ++k) a[i][k] = static_cast<uint8_t>(((first + i) * 11 + k * 13 + k / 1024 * 40) % 256);
  return data;
}

TEST(DataImageNet32, ChannelMajorRowsAndOneBasedLabels) {
  TempDir tmp;
  // Batches 2 and 10 only: read whichever exist, in numeric order (10 after 2).
  auto d2 = imagenet_rows(0, 3), d10 = imagenet_rows(3, 2), dv = imagenet_rows(50, 2);
  write_npz(tmp / "train_data_batch_10.npz", {{"data", d10}, {"labels", torch::tensor({7, 8}, torch::kLong)}});
  write_npz(tmp / "train_data_batch_2.npz", {{"data", d2},
                                             {"labels", torch::tensor({1, 1000, 500}, torch::kLong)},
                                             {"mean", torch::zeros({3072}, torch::kFloat64)}});
  write_npz(tmp / "val_data.npz", {{"data", dv}, {"labels", torch::tensor({3, 4}, torch::kInt32)}});

  auto train = read_imagenet32(tmp.str(), fm::Split::train);
  ASSERT_EQ(train.images.sizes(), (std::vector<int64_t>{5, 3, 32, 32}));
  EXPECT_TRUE(torch::equal(train.labels, torch::tensor({0, 999, 499, 6, 7}, torch::kLong)));
  EXPECT_EQ(train.num_classes, 1000);
  auto all = torch::cat({d2, d10});
  for (int64_t i : {0, 4})
    for (int64_t c = 0; c < 3; ++c)
      for (auto [y, x] : {std::pair<int64_t, int64_t>{0, 0}, {5, 9}, {31, 30}})
        EXPECT_EQ(train.images[i][c][y][x].item<int64_t>(), all[i][c * 1024 + y * 32 + x].item<int64_t>())
            << i << " " << c << " " << y << " " << x;
  EXPECT_TRUE(torch::equal(train.images.reshape({5, 3072}), all));

  auto val = read_imagenet32(tmp.str(), fm::Split::test);
  EXPECT_TRUE(torch::equal(val.images.reshape({2, 3072}), dv));
  EXPECT_TRUE(torch::equal(val.labels, torch::tensor({2, 3}, torch::kLong)));
}

TEST(DataImageNet32, WrongDtypeShapeLabelsAndTruncation) {
  TempDir tmp;
  const std::string f = tmp / "train_data_batch_1.npz";
  auto labels = torch::tensor({1, 2}, torch::kLong);

  write_npz(f, {{"data", imagenet_rows(0, 2).to(torch::kFloat32)}, {"labels", labels}});
  auto msg = input_error([&] { read_imagenet32(tmp.str(), fm::Split::train); });
  EXPECT_HAS(msg, "train_data_batch_1.npz");
  EXPECT_HAS(msg, "'data' has dtype Float, expected uint8");

  write_npz(f, {{"data", torch::zeros({2, 3000}, torch::kUInt8)}, {"labels", labels}});
  msg = input_error([&] { read_imagenet32(tmp.str(), fm::Split::train); });
  EXPECT_HAS(msg, "train_data_batch_1.npz");
  EXPECT_HAS(msg, "shape [2, 3000], expected [N, 3072]");

  write_npz(f, {{"data", imagenet_rows(0, 2)}, {"labels", torch::tensor({1, 0}, torch::kLong)}});
  msg = input_error([&] { read_imagenet32(tmp.str(), fm::Split::train); });
  EXPECT_HAS(msg, "entry 1 is 0, expected 1..1000");

  write_npz(f, {{"data", imagenet_rows(0, 2)}, {"labels", torch::tensor({1, 2, 3}, torch::kLong)}});
  msg = input_error([&] { read_imagenet32(tmp.str(), fm::Split::train); });
  EXPECT_HAS(msg, "'labels' has shape [3] but 'data' holds 2 images");

  write_npz(f, {{"data", imagenet_rows(0, 2)}});
  msg = input_error([&] { read_imagenet32(tmp.str(), fm::Split::train); });
  EXPECT_HAS(msg, "no array 'labels'");

  write_npz(f, {{"data", imagenet_rows(0, 2)}, {"labels", labels}});
  auto bytes = read_bytes(f);
  write_bytes(f, bytes.substr(0, bytes.size() - 40));
  msg = input_error([&] { read_imagenet32(tmp.str(), fm::Split::train); });
  EXPECT_HAS(msg, "train_data_batch_1.npz");

  msg = input_error([&] { read_imagenet32(tmp.str(), fm::Split::test); });
  EXPECT_HAS(msg, "missing val_data.npz");
  fs::remove(f);
  msg = input_error([&] { read_imagenet32(tmp.str(), fm::Split::train); });
  EXPECT_HAS(msg, "no train_data_batch_1.npz");
}

TEST(DataImageNet32, EmptyBatchIsRefused) {
  // A set of zero images would pass every other check and leave training looping forever in the batch sampler.
  TempDir tmp;
  write_npz(tmp / "val_data.npz",
            {{"data", torch::zeros({0, 3072}, torch::kUInt8)}, {"labels", torch::zeros({0}, torch::kLong)}});
  auto msg = input_error([&] { read_imagenet32(tmp.str(), fm::Split::test); });
  EXPECT_HAS(msg, tmp / "val_data.npz");
  EXPECT_HAS(msg, "'data' holds no images");
}

// --- image folders -------------------------------------------------------------------------------------------------

// Writes a uint8 [H, W, C] tensor as PNG (C = 1, 3 or 4).
void png(const std::string& path, const torch::Tensor& hwc) {
  fs::create_directories(fs::path(path).parent_path());
  auto t = hwc.contiguous();
  int h = static_cast<int>(t.size(0)), w = static_cast<int>(t.size(1)), c = static_cast<int>(t.size(2));
  ASSERT_TRUE(stbi_write_png(path.c_str(), w, h, c, t.data_ptr(), w * c));
}

torch::Tensor flat(int64_t h, int64_t w, std::vector<int64_t> rgb) {
  return torch::tensor(rgb, torch::kLong).to(torch::kUInt8).view({1, 1, -1}).expand({h, w, -1}).contiguous();
}

torch::Tensor pattern(int64_t h, int64_t w, int64_t c, int64_t salt) {
  return ((torch::arange(h * w * c) * 37 + salt) % 256).to(torch::kUInt8).view({h, w, c});
}

TEST(DataImageFolder, ClassesChannelsAndOrder) {
  TempDir tmp;
  const std::string dir = tmp / "imgs";
  auto rgb = pattern(8, 8, 3, 1), grey = pattern(8, 8, 1, 2), rgba = pattern(8, 8, 4, 3);
  png(dir + "/dog/b.png", rgb);
  png(dir + "/dog/a.png", grey);
  png(dir + "/cat/x.png", rgba);
  png(dir + "/.thumbs/hidden.png", rgb);  // hidden folders are skipped
  fs::create_directories(dir + "/ant/sub");
  auto jpeg_colour = flat(8, 8, {200, 40, 90});
  ASSERT_TRUE(stbi_write_jpg((dir + "/ant/sub/y.jpg").c_str(), 8, 8, 3, jpeg_colour.data_ptr(), 95));
  write_bytes(dir + "/cat/notes.txt", "not an image");

  auto listing = list_image_folder(dir);
  EXPECT_EQ(listing.classes, (std::vector<std::string>{"ant", "cat", "dog"}));
  ASSERT_EQ(listing.files.size(), 4u);
  EXPECT_EQ(fs::path(listing.files[0]).filename(), "y.jpg");
  EXPECT_EQ(fs::path(listing.files[3]).filename(), "b.png");

  auto ds = read_image_folder(dir);
  ASSERT_EQ(ds.images.sizes(), (std::vector<int64_t>{4, 3, 8, 8}));
  EXPECT_TRUE(torch::equal(ds.labels, torch::tensor({0, 1, 2, 2}, torch::kLong)));
  EXPECT_EQ(ds.num_classes, 3);
  auto hwc = ds.images.permute({0, 2, 3, 1});
  // The JPEG is lossy: a flat colour comes back within a few levels.
  EXPECT_LE((hwc[0].to(torch::kInt) - jpeg_colour.to(torch::kInt)).abs().max().item<int>(), 4);
  EXPECT_TRUE(torch::equal(hwc[1], rgba.narrow(2, 0, 3)));  // alpha dropped
  EXPECT_TRUE(torch::equal(hwc[2], grey.expand({8, 8, 3})));  // grey replicated
  EXPECT_TRUE(torch::equal(hwc[3], rgb));                      // R, G, B planes in order
}

// Pillow (what torchvision's ImageFolder decodes with) as an independent reference: PNG and BMP agree exactly, grey
// and RGBA converted alike; JPEG decoders differ in their IDCT and chroma upsampling by a few levels at most.
TEST(DataImageFolder, MatchesPillow) {
  TempDir tmp;
  const std::string dir = tmp / "imgs";
  const int64_t h = 16, w = 24;
  auto y = torch::arange(h).view({h, 1, 1}), x = torch::arange(w).view({1, w, 1}), c = torch::arange(3).view({1, 1, 3});
  auto smooth = (128 + 100 * torch::sin(0.3 * x + 0.2 * y + 2.0 * c)).round().to(torch::kUInt8).contiguous();
  png(dir + "/a_rgb.png", pattern(h, w, 3, 7));
  png(dir + "/b_grey.png", pattern(h, w, 1, 8));
  png(dir + "/c_rgba.png", pattern(h, w, 4, 9));
  ASSERT_TRUE(stbi_write_bmp((dir + "/d.bmp").c_str(), w, h, 3, pattern(h, w, 3, 10).data_ptr()));
  ASSERT_TRUE(stbi_write_jpg((dir + "/e.jpg").c_str(), w, h, 3, smooth.data_ptr(), 90));

  auto listing = list_image_folder(dir);
  std::string cmd = std::string(FM_PYTHON_EXE) + " " + FM_SOURCE_DIR + "/tests/ref/pil_decode.py " + (tmp / "ref.npy");
  for (const auto& f : listing.files) cmd += " " + f;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  auto ref = read_npy(tmp / "ref.npy").to(torch::kInt);
  auto ours = read_image_folder(dir).images.to(torch::kInt);
  ASSERT_EQ(ours.sizes(), ref.sizes());
  EXPECT_TRUE(torch::equal(ours.narrow(0, 0, 4), ref.narrow(0, 0, 4)));
  auto jpeg_diff = (ours[4] - ref[4]).abs();
  EXPECT_LE(jpeg_diff.max().item<int>(), 4);
  EXPECT_LT(jpeg_diff.to(torch::kFloat).mean().item<float>(), 1.0f);
}

TEST(DataImageFolder, UnlabelledSortedAndLimit) {
  TempDir tmp;
  png(tmp / "c.png", flat(4, 4, {3, 3, 3}));
  png(tmp / "a.png", flat(4, 4, {1, 1, 1}));
  auto grey2 = flat(4, 4, {2, 2, 2});
  ASSERT_TRUE(stbi_write_bmp((tmp / "b.bmp").c_str(), 4, 4, 3, grey2.data_ptr()));
  auto ds = read_image_folder(tmp.str());
  EXPECT_FALSE(ds.labels.defined());
  EXPECT_EQ(ds.num_classes, 0);
  EXPECT_TRUE(torch::equal(ds.images.amax({1, 2, 3}), torch::tensor({1, 2, 3}, torch::kUInt8)));

  DataConfig cfg = parse_data_spec("folder:" + tmp.str());
  cfg.limit = 2;
  auto limited = load_dataset(cfg, torch::kCPU);
  EXPECT_TRUE(torch::equal(limited.images, ds.images.narrow(0, 0, 2)));
}

// A limit on a folder listed class by class takes every class its share, not the first N files of the first class.
TEST(DataImageFolder, LimitTakesEveryClassItsShare) {
  EXPECT_EQ(evenly_spread(10, 4), (std::vector<int64_t>{0, 2, 5, 7}));
  EXPECT_EQ(evenly_spread(3, 0), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(evenly_spread(3, 5), (std::vector<int64_t>{0, 1, 2}));
  TempDir tmp;
  const std::vector<std::string> classes{"bird", "cat", "dog"};
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < 4; ++i)
      png(tmp / (classes[c] + "/" + std::to_string(i) + ".png"), flat(4, 4, {10 * c + i, 0, 0}));
  DataConfig cfg = parse_data_spec("folder:" + tmp.str());
  cfg.limit = 3;
  auto ds = load_dataset(cfg, torch::kCPU);
  EXPECT_TRUE(torch::equal(ds.labels, torch::tensor({0, 1, 2}, torch::kLong))) << ds.labels;
  EXPECT_TRUE(torch::equal(ds.images.select(1, 0).amax({1, 2}), torch::tensor({0, 10, 20}, torch::kUInt8)));
  EXPECT_EQ(ds.class_names, classes);
  EXPECT_NE(ds.subset.find("3 of 12"), std::string::npos) << ds.subset;
  cfg.limit = 6;
  EXPECT_TRUE(torch::equal(load_dataset(cfg, torch::kCPU).labels, torch::tensor({0, 0, 1, 1, 2, 2}, torch::kLong)));
  cfg.limit = 0;
  ds = load_dataset(cfg, torch::kCPU);
  EXPECT_EQ(ds.size(), 12);
  EXPECT_EQ(ds.subset, "");
  EXPECT_EQ(describe_classes(ds), "3 classes (bird, cat, dog)");
}

TEST(DataLoadDataset, MissingPathNamesDataPath) {
  auto cfg = parse_data_spec("cifar10:data/no-such-cifar-dir");
  EXPECT_HAS(input_error([&] { load_dataset(cfg, torch::kCPU); }), "--set data.path=");
}

TEST(DataImageFolder, ResolutionAndCenterCrop) {
  TempDir tmp;
  // 8 wide, 4 high: blue two-column bands left and right of a red centre square.
  auto wide = flat(4, 8, {0, 0, 255});
  wide.narrow(1, 2, 4).copy_(flat(4, 4, {255, 0, 0}));
  png(tmp / "a.png", wide);
  png(tmp / "b.png", flat(6, 5, {10, 120, 230}));

  auto msg = input_error([&] { read_image_folder(tmp.str()); });
  EXPECT_HAS(msg, tmp / "b.png");
  EXPECT_HAS(msg, "5x6");
  EXPECT_HAS(msg, "8x4");

  ImageFolderOptions crop;
  crop.resolution = 4;
  crop.center_crop = true;
  auto ds = read_image_folder(tmp.str(), crop);
  ASSERT_EQ(ds.images.sizes(), (std::vector<int64_t>{2, 3, 4, 4}));
  // The centred square is exactly the red part (no resampling at equal size).
  EXPECT_TRUE(torch::equal(ds.images[0].permute({1, 2, 0}), flat(4, 4, {255, 0, 0})));
  // Resampling a flat colour keeps it.
  EXPECT_LE((ds.images[1].permute({1, 2, 0}).to(torch::kInt) - flat(4, 4, {10, 120, 230}).to(torch::kInt)).abs().max().item<int>(), 1);

  // The crop alone, without a resolution: the images keep their size, cropped to its centred square.
  ImageFolderOptions crop_only;
  crop_only.center_crop = true;
  TempDir tmp2;
  png(tmp2 / "a.png", wide);
  png(tmp2 / "b.png", wide.flip({2}));  // channels reversed: a blue centre between red bands
  auto only = read_image_folder(tmp2.str(), crop_only);
  ASSERT_EQ(only.images.sizes(), (std::vector<int64_t>{2, 3, 4, 4}));
  EXPECT_TRUE(torch::equal(only.images[0].permute({1, 2, 0}), flat(4, 4, {255, 0, 0})));
  EXPECT_TRUE(torch::equal(only.images[1].permute({1, 2, 0}), flat(4, 4, {0, 0, 255})));

  crop.resolution = 2;
  EXPECT_LE((read_image_folder(tmp.str(), crop).images[0].permute({1, 2, 0}).to(torch::kInt) -
             flat(2, 2, {255, 0, 0}).to(torch::kInt)).abs().max().item<int>(), 1);

  // Without the crop the whole 8x4 image is squashed to 4x4: the blue bands stay at the sides.
  crop.center_crop = false;
  crop.resolution = 4;
  auto squashed = read_image_folder(tmp.str(), crop).images[0].to(torch::kInt);
  EXPECT_GT(squashed[2].select(1, 0).min().item<int>(), squashed[0].select(1, 0).max().item<int>());
  EXPECT_GT(squashed[0].select(1, 2).min().item<int>(), squashed[2].select(1, 2).max().item<int>());
}

TEST(DataImageFolder, BadFolders) {
  TempDir tmp;
  png(tmp / "ok/a.png", flat(4, 4, {1, 2, 3}));
  write_bytes(tmp / "ok/bad.png", "\x89PNG but not really");
  auto msg = input_error([&] { read_image_folder(tmp / "ok"); });
  EXPECT_HAS(msg, tmp / "ok/bad.png");
  EXPECT_HAS(msg, "cannot decode");

  fs::create_directories(tmp / "empty");
  msg = input_error([&] { read_image_folder(tmp / "empty"); });
  EXPECT_HAS(msg, "no PNG, JPEG or BMP images");

  png(tmp / "mixed/top.png", flat(4, 4, {1, 2, 3}));
  png(tmp / "mixed/cls/in.png", flat(4, 4, {1, 2, 3}));
  msg = input_error([&] { read_image_folder(tmp / "mixed"); });
  EXPECT_HAS(msg, "top.png");
  EXPECT_HAS(msg, "both");

  png(tmp / "classes/a/x.png", flat(4, 4, {1, 2, 3}));
  fs::create_directories(tmp / "classes/b");
  msg = input_error([&] { read_image_folder(tmp / "classes"); });
  EXPECT_HAS(msg, tmp / "classes/b");
  EXPECT_HAS(msg, "holds no");

  // A 70-byte PNG whose header claims 10000 x 10000 pixels is refused from the header, before anything is allocated.
  png(tmp / "huge/a.png", flat(1, 1, {1, 2, 3}));
  auto bytes = read_bytes(tmp / "huge/a.png");
  const char side[4] = {0, 0, 0x27, 0x10};  // big-endian 10000, IHDR width then height
  bytes.replace(16, 4, side, 4);
  bytes.replace(20, 4, side, 4);
  write_bytes(tmp / "huge/a.png", bytes);
  msg = input_error([&] { read_image_folder(tmp / "huge"); });
  EXPECT_HAS(msg, tmp / "huge/a.png");
  EXPECT_HAS(msg, "image is 10000x10000, larger than fm reads");

  // A 54-byte BMP of 2 x 0 pixels (found by fuzz_image): stb decodes it, and resizing it aborted on an assertion.
  write_bytes(tmp / "empty_bmp/a.bmp",
              std::string("\x42\x4d\xde\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00\x02\x00\x00\x00"
                          "\x00\x00\x00\x00\x01\x00\x18\x00\x00\x00\x00\x00\x00\xc4\x0e\x00\x00\xc4\x0e\x00\x00\x60"
                          "\xbf\xd2\xe9\xba\xc5\x36\xe0\xd4\x0b\x00",
                          54));
  ImageFolderOptions eight;
  eight.resolution = 8;
  msg = input_error([&] { read_image_folder(tmp / "empty_bmp", eight); });
  EXPECT_HAS(msg, tmp / "empty_bmp/a.bmp");
  EXPECT_HAS(msg, "image is 2x0: no pixels");

  // Its sibling of 9 x 16777210 pixels (height -16777210: top-down rows) decoded and then took minutes to resize.
  auto tall = read_bytes(tmp / "empty_bmp/a.bmp");
  const char header[8] = {9, 0, 0, 0, 6, 0, 0, static_cast<char>(0xff)};
  tall.replace(18, 8, header, 8);
  write_bytes(tmp / "tall_bmp/a.bmp", tall);
  msg = input_error([&] { read_image_folder(tmp / "tall_bmp", eight); });
  EXPECT_HAS(msg, tmp / "tall_bmp/a.bmp");
  EXPECT_HAS(msg, "image is 9x16777210, larger than fm reads");
}

// --- npz samples ---------------------------------------------------------------------------------------------------

TEST(DataNpzImages, NhwcToNchwWithLabels) {
  TempDir tmp;
  auto x = pattern(3 * 5 * 4, 1, 3, 5).view({3, 5, 4, 3});
  write_npz(tmp / "s.npz", {{"arr_0", x}, {"labels", torch::tensor({4, 0, 2}, torch::kInt32)}});
  auto ds = read_npz_images(tmp / "s.npz");
  ASSERT_EQ(ds.images.sizes(), (std::vector<int64_t>{3, 3, 5, 4}));
  EXPECT_EQ(ds.images[2][1][3][0].item<int64_t>(), x[2][3][0][1].item<int64_t>());
  EXPECT_TRUE(torch::equal(ds.images, x.permute({0, 3, 1, 2})));
  EXPECT_TRUE(torch::equal(ds.labels, torch::tensor({4, 0, 2}, torch::kLong)));
  EXPECT_EQ(ds.num_classes, 5);

  write_npz(tmp / "u.npz", {{"arr_0", x}});
  EXPECT_FALSE(read_npz_images(tmp / "u.npz").labels.defined());
}

TEST(DataNpzImages, Errors) {
  TempDir tmp;
  const std::string f = tmp / "s.npz";
  write_npz(f, {{"arr_0", torch::zeros({2, 4, 4, 3}, torch::kFloat32)}});
  auto msg = input_error([&] { read_npz_images(f); });
  EXPECT_HAS(msg, f);
  EXPECT_HAS(msg, "dtype Float, expected uint8");

  write_npz(f, {{"arr_0", torch::zeros({2, 4, 4}, torch::kUInt8)}});
  msg = input_error([&] { read_npz_images(f); });
  EXPECT_HAS(msg, "shape [2, 4, 4], expected [N, H, W, C]");

  write_npz(f, {{"arr_0", torch::zeros({2, 4, 4, 3}, torch::kUInt8)}, {"labels", torch::zeros({3}, torch::kLong)}});
  msg = input_error([&] { read_npz_images(f); });
  EXPECT_HAS(msg, "'labels' has shape [3] but 'arr_0' holds 2 images");

  write_npz(f, {{"images", torch::zeros({2, 4, 4, 3}, torch::kUInt8)}});
  msg = input_error([&] { read_npz_images(f); });
  EXPECT_HAS(msg, "no array 'arr_0'");

  // The largest label sizes the class count: INT64_MAX overflowed it, and any huge one would size an embedding.
  write_npz(f, {{"arr_0", torch::zeros({2, 4, 4, 3}, torch::kUInt8)},
                {"labels", torch::tensor({int64_t(3), INT64_MAX}, torch::kLong)}});
  msg = input_error([&] { read_npz_images(f); });
  EXPECT_HAS(msg, "'labels' entry 1 is 9223372036854775807, expected < 1048576");

  write_npz(f, {{"arr_0", torch::zeros({2, 4, 4, 3}, torch::kUInt8)}});
  auto bytes = read_bytes(f);
  write_bytes(f, bytes.substr(0, bytes.size() / 2));
  msg = input_error([&] { read_npz_images(f); });
  EXPECT_HAS(msg, f);
}

// --- shapes --------------------------------------------------------------------------------------------------------

TEST(DataShapes, DeterministicForASeedAndBalanced) {
  auto a = make_shapes(100, 16, 7), b = make_shapes(100, 16, 7), c = make_shapes(100, 16, 8);
  EXPECT_TRUE(torch::equal(a.images, b.images));
  EXPECT_TRUE(torch::equal(a.labels, b.labels));
  EXPECT_FALSE(torch::equal(a.images, c.images));
  EXPECT_FALSE(torch::equal(a.labels, c.labels));
  auto counts = torch::bincount(a.labels, {}, 3);
  EXPECT_EQ(counts.min().item<int64_t>(), 33);
  EXPECT_EQ(counts.max().item<int64_t>(), 34);
  // Roughly half on gradients.
  auto g = a.gradient.sum().item<int64_t>();
  EXPECT_GT(g, 30);
  EXPECT_LT(g, 70);
}

TEST(DataShapes, TwoColoursOnPlainBackgroundsAndDistinctObjects) {
  for (int64_t res : {16, 32}) {
    auto s = make_shapes(60, res, 3);
    for (int64_t i = 0; i < 60; ++i) {
      auto img = s.images[i], mask = s.masks[i];
      const int64_t obj = mask.sum().item<int64_t>();
      ASSERT_GT(obj, 0);
      auto fg = s.object[i].to(torch::kInt).view({3, 1});
      auto px = img.reshape({3, -1}).to(torch::kInt);
      auto m = mask.reshape({-1});
      // The object is exactly its colour; the background keeps its distance in every channel.
      EXPECT_TRUE(torch::equal(px.index({torch::indexing::Slice(), m}), fg.expand({3, obj})));
      EXPECT_GE((px.index({torch::indexing::Slice(), ~m}) - fg).abs().min().item<int64_t>(), kShapeMinColourGap);
      auto colours = colour_counts(img);
      if (!s.gradient[i].item<bool>()) {
        ASSERT_EQ(colours.size(), 2u) << "image " << i;
        for (const auto& cc : colours) {
          bool is_obj = cc.rgb[0] == s.object[i][0].item<uint8_t>() && cc.rgb[1] == s.object[i][1].item<uint8_t>() &&
                        cc.rgb[2] == s.object[i][2].item<uint8_t>();
          bool is_bg = cc.rgb[0] == s.background[i][0].item<uint8_t>() &&
                       cc.rgb[1] == s.background[i][1].item<uint8_t>() && cc.rgb[2] == s.background[i][2].item<uint8_t>();
          EXPECT_TRUE(is_obj != is_bg);
          EXPECT_EQ(cc.pixels, is_obj ? obj : res * res - obj);
        }
      } else {
        EXPECT_GT(colours.size(), 2u) << "image " << i;
      }
    }
  }
}

TEST(DataShapes, KindsSizesAndPlacement) {
  const int64_t res = 32;
  auto s = make_shapes(150, res, 11);
  for (int64_t i = 0; i < 150; ++i) {
    auto mask = s.masks[i];
    auto rows = mask.any(1).nonzero().view(-1), cols = mask.any(0).nonzero().view(-1);
    int64_t h = rows.size(0), w = cols.size(0);
    // Contiguous rows and columns: one solid object.
    ASSERT_EQ(rows[-1].item<int64_t>() - rows[0].item<int64_t>() + 1, h);
    ASSERT_EQ(cols[-1].item<int64_t>() - cols[0].item<int64_t>() + 1, w);
    EXPECT_GE(std::min(h, w), static_cast<int64_t>(0.4 * res) - 1);
    EXPECT_LE(std::max(h, w), static_cast<int64_t>(0.7 * res) + 1);
    double fill = mask.sum().item<double>() / static_cast<double>(h * w);
    auto width = [&](int64_t r) { return mask[r].sum().item<int64_t>(); };
    int64_t top = width(rows[0].item<int64_t>()), bottom = width(rows[-1].item<int64_t>());
    switch (s.labels[i].item<int64_t>()) {
      case kShapeSquare:
        EXPECT_EQ(fill, 1.0);
        break;
      case kShapeCircle:
        EXPECT_GT(fill, 0.7);
        EXPECT_LT(fill, 0.9);
        EXPECT_LT(top, w - 2);  // round at both ends
        EXPECT_LT(bottom, w - 2);
        break;
      case kShapeTriangle:
        EXPECT_GT(fill, 0.4);
        EXPECT_LT(fill, 0.65);
        EXPECT_GE(bottom, w - 1);  // apex up, base at the bottom
        EXPECT_LE(top, w / 2);
        break;
    }
  }
}

TEST(DataShapes, ColourCounts) {
  auto img = torch::zeros({3, 2, 3}, torch::kUInt8);
  img.select(2, 0).fill_(9);             // column 0: (9, 9, 9), 2 pixels
  img[0][1][1] = 5;                      // (5, 0, 0), 1 pixel
  auto c = colour_counts(img);           // and (0, 0, 0), 3 pixels
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].rgb, (std::array<uint8_t, 3>{0, 0, 0}));
  EXPECT_EQ(c[0].pixels, 3);
  EXPECT_EQ(c[1].rgb, (std::array<uint8_t, 3>{9, 9, 9}));
  EXPECT_EQ(c[1].pixels, 2);
  EXPECT_EQ(c[2].rgb, (std::array<uint8_t, 3>{5, 0, 0}));
}

TEST(DataShapes, TwoColourFractionSeparatesShapesFromNoiseAndBlur) {
  for (int64_t res : {16, 32}) {
    auto s = make_shapes(200, res, 5);
    auto data = two_colour_fraction(s.images);
    // Plain backgrounds hold exactly two colours; gradients spread at most 40 per channel around their mean.
    auto plain = ~s.gradient;
    EXPECT_TRUE(torch::equal(data.index({plain}), torch::ones_like(data.index({plain}))));
    EXPECT_GT(data.min().item<double>(), 0.9) << res;
    // What an untrained model produces (its velocity is zero at initialisation: the noise itself, as pixels)...
    torch::manual_seed(1);
    auto noise = ((torch::randn(s.images.sizes()) + 1) * 127.5).round().clamp(0, 255).to(torch::kUInt8);
    auto n = two_colour_fraction(noise);
    // ...and what a half-trained one gives: the right colours with soft edges and speckle.
    auto soft = torch::nn::functional::avg_pool2d(s.images.to(torch::kFloat32),
                                                  torch::nn::functional::AvgPool2dFuncOptions(3).stride(1).padding(1)
                                                      .count_include_pad(false));
    soft = (soft + 12 * torch::randn(soft.sizes())).round().clamp(0, 255).to(torch::kUInt8);
    auto b = two_colour_fraction(soft);
    RecordProperty("noise_" + std::to_string(res), std::to_string(n.mean().item<double>()));
    RecordProperty("soft_" + std::to_string(res), std::to_string(b.mean().item<double>()));
    EXPECT_LT(n.max().item<double>(), 0.2);
    EXPECT_LT(b.mean().item<double>(), 0.8);
  }
}

// --- load_dataset and the sampler ----------------------------------------------------------------------------------

TEST(DataLoadDataset, ShapesSpecLimitAndCifarDispatch) {
  auto cfg = parse_data_spec("shapes:12");
  auto ds = load_dataset(cfg, fm::test::device());
  ASSERT_EQ(ds.images.sizes(), (std::vector<int64_t>{12, 3, 32, 32}));
  EXPECT_EQ(ds.images.device(), fm::test::device());
  EXPECT_EQ(ds.num_classes, 3);
  auto ref = make_shapes(12, 32, 0);
  EXPECT_TRUE(torch::equal(ds.images.cpu(), ref.images));

  EXPECT_EQ(ds.class_names, (std::vector<std::string>{"circle", "square", "triangle"}));  // ShapeKind's order
  EXPECT_EQ(kShapeCircle, 0);
  EXPECT_EQ(kShapeTriangle, 2);

  cfg.resolution = 16;
  cfg.limit = 5;
  ds = load_dataset(cfg, fm::test::device());
  ref = make_shapes(12, 16, 0);
  auto idx = torch::tensor({0, 2, 4, 7, 9}, torch::kLong);  // floor(i * 12 / 5)
  EXPECT_TRUE(torch::equal(ds.images.cpu(), ref.images.index_select(0, idx)));
  EXPECT_TRUE(torch::equal(ds.labels.cpu(), ref.labels.index_select(0, idx)));
  EXPECT_NE(ds.subset.find("5 of 12"), std::string::npos) << ds.subset;

  cfg.path = "";
  cfg.size = 7;
  cfg.limit = 0;
  EXPECT_EQ(load_dataset(cfg, fm::test::device()).size(), 7);
  cfg.path = "checkerboard";
  EXPECT_HAS(input_error([&] { load_dataset(cfg, fm::test::device()); }), "shapes takes an image count");

  TempDir tmp;
  write_cifar(tmp.str());
  cfg = parse_data_spec("cifar10:" + tmp.str());
  cfg.limit = 3;
  ds = load_dataset(cfg, fm::test::device());
  idx = torch::tensor({0, 3, 6}, torch::kLong);  // floor(i * 10 / 3)
  EXPECT_TRUE(torch::equal(ds.images.cpu(), expected_cifar(0, 10).index_select(0, idx)));
  EXPECT_TRUE(torch::equal(ds.labels.cpu(), (idx * 3 + 1) % 10));
  ASSERT_EQ(ds.class_names.size(), 10u);  // torchvision's CIFAR10.classes
  EXPECT_EQ(ds.class_names[0], "airplane");
  EXPECT_EQ(ds.class_names[3], "cat");
  EXPECT_EQ(ds.class_names[9], "truck");
  cfg.resolution = 64;
  EXPECT_HAS(input_error([&] { load_dataset(cfg, fm::test::device()); }), "data.resolution");
}

TEST(DataBatchSampler, RefusesAnEmptyDataSet) {
  // Whatever reader lets an empty set through, the sampler must not spin on it.
  Dataset ds;
  ds.name = "npz:empty.npz";
  ds.images = torch::zeros({0, 3, 4, 4}, torch::kUInt8);
  auto msg = input_error([&] { BatchSampler sampler(ds, false); });
  EXPECT_HAS(msg, "npz:empty.npz: the data set holds no images");
  Dataset toy;
  toy.toy = ToyData::checkerboard;
  EXPECT_EQ(BatchSampler(toy, false).next(3).x.size(0), 3);  // toys have no images and are fine
}

TEST(DataBatchSampler, ImageBatchesInRangeAndExactFlips) {
  torch::manual_seed(0);
  const int64_t n = 40;
  Dataset ds;
  ds.device = fm::test::device();
  ds.images = torch::randint(0, 256, {n, 3, 4, 5}, torch::kLong).to(ds.device, torch::kUInt8);
  ds.images[0].fill_(0);
  ds.images[1].fill_(255);
  ds.labels = torch::arange(n, fm::test::opts(torch::kLong));  // each image's own index, to find its source
  ds.num_classes = n;

  for (bool hflip : {true, false}) {
    BatchSampler sampler(ds, hflip);
    int64_t flipped = 0, total = 0;
    for (int step = 0; step < 60; ++step) {
      auto b = sampler.next(16);
      ASSERT_EQ(b.x.sizes(), (std::vector<int64_t>{16, 3, 4, 5}));
      EXPECT_GE(b.x.min().item<float>(), -1.0f);
      EXPECT_LE(b.x.max().item<float>(), 1.0f);
      for (int64_t k = 0; k < 16; ++k) {
        int64_t i = b.labels[k].item<int64_t>();
        auto src = ds.images[i].to(torch::kFloat32) / 127.5 - 1.0;
        bool same = torch::equal(b.x[k], src), mirror = torch::equal(b.x[k], src.flip({2}));
        ASSERT_TRUE(same || mirror) << "item " << k << " is neither image " << i << " nor its mirror";
        if (i == 0) EXPECT_EQ(b.x[k].max().item<float>(), -1.0f);
        if (i == 1) EXPECT_EQ(b.x[k].min().item<float>(), 1.0f);
        flipped += mirror && !same;
        ++total;
      }
    }
    if (hflip) {
      EXPECT_NEAR(static_cast<double>(flipped) / total, 0.5, 0.07);  // 960 draws: sd 0.016
    } else {
      EXPECT_EQ(flipped, 0);
    }
  }
}

}  // namespace
}  // namespace fm
