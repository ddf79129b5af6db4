// FID: the Inception network against pytorch-fid's own and clean-fid's "clean" mode (random weights exported with
// scripts/export_fid_inception.py), PIL's bicubic resize against Pillow, the Frechet distance against pytorch-fid's
// calculate_frechet_distance and closed forms, precision and recall against the paper's definition in numpy,
// statistics files both ways with numpy and their faults, feature moments against torch::cov, and the CLI end to end.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <ftw.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "fid/fid_run.h"
#include "fid/fid_stats.h"
#include "fid/frechet.h"
#include "fid/inception.h"
#include "fid/pil_resize.h"
#include "fid/precision_recall.h"
#include "io/npy.h"
#include "test_util.h"
#include "util/error.h"
#include "util/preemption.h"

namespace fm {
namespace {

namespace fs = std::filesystem;

using fm::test::TempDir;

struct Run {
  int code;
  std::string out;
};
// Runs a shell command; stdout is captured, stderr passes through to the test log.
Run run(const std::string& cmd) {
  Run r{-1, ""};
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string ref_script() { return std::string(FM_SOURCE_DIR) + "/tests/ref/fid_ref.py"; }
Run run_ref(const std::string& args) { return run(std::string(FM_PYTHON_EXE) + " " + ref_script() + " " + args); }

double max_rel(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max() / b.to(torch::kFloat64).abs().max())
      .item<double>();
}

torch::Tensor nhwc_to_nchw(const torch::Tensor& t) { return t.permute({0, 3, 1, 2}).contiguous(); }

FidStats stats_of(const torch::Tensor& features) {
  FeatureMoments m;
  m.add(features);
  return m.finish();
}

// ---- the network against pytorch-fid ------------------------------------------------------------------------------

// fm runs channels-last on CPU (pytorch-fid here NCHW): the features agree to ~5e-7, not bitwise.
// One test, so that the reference (torch import, 22M random weights, 9 images through pytorch-fid) runs once even
// when ctest runs every test in its own process.
TEST(FidInception, MatchesPytorchFidFeaturesStatsAndDistances) {
  FM_SKIP_ON_CUDA("compares with pytorch-fid run on the CPU; CudaParity.FidInceptionFeatures compares CUDA with CPU");
  TempDir dir;
  auto ref = run_ref("inception " + dir.str() + " 5");
  ASSERT_EQ(ref.code, 0) << ref.out;

  auto net = load_fid_inception(dir / "weights.npz", torch::kCPU);
  auto images = nhwc_to_nchw(read_npz(dir / "images.npz").at("arr_0"));
  ASSERT_EQ(images.sizes(), (std::vector<int64_t>{9, 3, 32, 32}));
  FeatureOptions opt;
  opt.batch = 4;  // batches of 4, 4, 1: the batch split must not matter
  opt.keep_features = true;
  opt.progress = false;
  auto r = compute_fid_features(net, images, opt);
  auto expected = read_npy(dir / "features.npy");
  ASSERT_EQ(r.features.sizes(), expected.sizes());
  EXPECT_GT(expected.std().item<double>(), 0.1);  // the random network is not degenerate
  EXPECT_LT(max_rel(r.features, expected), 1e-4);
  // Per image too, so that one image's small features cannot hide behind another's large ones.
  for (int64_t i = 0; i < 9; ++i) EXPECT_LT(max_rel(r.features[i], expected[i]), 1e-4) << "image " << i;

  // Statistics of the first 6 against numpy's mean and np.cov of pytorch-fid's features.
  auto same = stats_of(r.features.slice(0, 0, 6));
  auto ref_stats = read_fid_stats(dir / "stats_ref.npz");
  EXPECT_EQ(ref_stats.n, -1);  // pytorch-fid's files do not say how many images
  EXPECT_LT(max_rel(same.mu, ref_stats.mu), 1e-4);
  EXPECT_LT(max_rel(same.sigma, ref_stats.sigma), 1e-4);

  // A set against itself: 0 (rank 5 covariances in 2048 dimensions, the hard case for the matrix root).
  EXPECT_NEAR(frechet_distance(same, same).distance, 0.0, 1e-6);
  // Two disjoint halves of one distribution are close; a different distribution is far.
  auto h1 = stats_of(r.features.slice(0, 0, 3)), h2 = stats_of(r.features.slice(0, 3, 6));
  auto other = stats_of(r.features.slice(0, 6, 9));
  double d_halves = frechet_distance(h1, h2).distance, d_other = frechet_distance(h1, other).distance;
  EXPECT_GT(d_halves, 1e-6);
  EXPECT_LT(d_halves, 0.5 * d_other) << "halves " << d_halves << " vs other " << d_other;
}

// clean-fid's "clean" mode (PIL bicubic on float images, clipped, (x - 128) / 128) on the same random network: its own
// file reading, resize and input scaling in Python. The two modes' features differ by far more than the agreement, so
// a mode that fell back to the other would fail.
TEST(FidInception, CleanResizeMatchesCleanFid) {
  FM_SKIP_ON_CUDA("compares with clean-fid run on the CPU");
  TempDir dir;
  auto ref = run_ref("clean " + dir.str() + " 5");
  ASSERT_EQ(ref.code, 0) << ref.out;
  auto net = load_fid_inception(dir / "weights.npz", torch::kCPU);
  auto images = nhwc_to_nchw(read_npz(dir / "images.npz").at("arr_0"));
  FeatureOptions opt;
  opt.batch = 5;
  opt.keep_features = true;
  opt.progress = false;
  opt.resize = FidResize::clean;
  auto clean = compute_fid_features(net, images, opt).features;
  auto expected = read_npy(dir / "clean_features.npy");
  ASSERT_EQ(clean.sizes(), expected.sizes());
  EXPECT_GT(expected.std().item<double>(), 0.1);
  const double agreement = max_rel(clean, expected);
  for (int64_t i = 0; i < 9; ++i) EXPECT_LT(max_rel(clean[i], expected[i]), 1e-4) << "image " << i;
  opt.resize = FidResize::pytorch_fid;
  const double between_modes = max_rel(compute_fid_features(net, images, opt).features, expected);
  EXPECT_GT(between_modes, 100 * agreement) << "clean " << agreement << ", pytorch-fid " << between_modes;
  RecordProperty("clean_vs_clean_fid_max_rel", std::to_string(agreement));
  RecordProperty("pytorch_fid_mode_vs_clean_fid_max_rel", std::to_string(between_modes));
  std::printf("clean mode vs clean-fid: max relative difference %.3g; pytorch-fid mode vs clean-fid %.3g\n",
              agreement, between_modes);
}

// PIL's own Image.resize(BICUBIC) of mode "F" images: up (32 -> 299, as FID at 32x32), down (the filter widens),
// mixed, odd sizes, an axis left as it is, and values outside [0, 255] (not clipped).
TEST(PilResize, MatchesPillowOnFloatImages) {
  TempDir dir;
  auto ref = run_ref("pil-resize " + dir.str());
  ASSERT_EQ(ref.code, 0) << ref.out;
  auto arrays = read_npz(dir / "pil_resize.npz");
  int64_t values = 0, differing = 0;
  double worst_ulps = 0;
  for (int i = 0; arrays.count("in_" + std::to_string(i)); ++i) {
    const auto& in = arrays.at("in_" + std::to_string(i));
    const auto& want = arrays.at("out_" + std::to_string(i));
    auto got = pil_bicubic_resize(in.unsqueeze(0).unsqueeze(0), want.size(0), want.size(1))[0][0];
    ASSERT_EQ(got.sizes(), want.sizes()) << "case " << i;
    // Differences in units of float32's spacing at each value (2^-23 of its binade).
    auto spacing = torch::pow(2.0, torch::floor(torch::log2(want.abs().to(torch::kFloat64).clamp_min(1e-30))) - 23);
    auto ulps = (got.to(torch::kFloat64) - want.to(torch::kFloat64)).abs() / spacing;
    values += want.numel();
    differing += (got != want).sum().item<int64_t>();
    worst_ulps = std::max(worst_ulps, ulps.max().item<double>());
    EXPECT_LE(ulps.max().item<double>(), 1.0) << "case " << i;
  }
  EXPECT_EQ(values, 2 * 299 * 299 + 299 * 299 + 17 * 50 + 16 * 45);
  RecordProperty("pil_resize_values", std::to_string(values));
  RecordProperty("pil_resize_values_differing", std::to_string(differing));
  std::printf("PIL bicubic (mode F): %lld of %lld values differ from Pillow's, by at most %.0f float32 ulp\n",
              static_cast<long long>(differing), static_cast<long long>(values), worst_ulps);
}

TEST(PilResize, WeightsAreNormalisedAndKeepConstantsAndSizes) {
  for (auto [in, out] : {std::pair<int64_t, int64_t>{32, 299}, {512, 299}, {5, 3}, {1, 4}}) {
    auto w = pil_bicubic_weights(in, out);
    ASSERT_EQ(w.sizes(), (std::vector<int64_t>{out, in}));
    EXPECT_LT((w.sum(1) - 1).abs().max().item<double>(), 1e-15) << in << " -> " << out;
  }
  // Same size: the identity, exactly. A constant image stays constant (the weights sum to 1).
  auto x = torch::rand({2, 3, 9, 11});
  EXPECT_TRUE(torch::equal(pil_bicubic_resize(x, 9, 11), x));
  auto c = pil_bicubic_resize(torch::full({1, 1, 32, 32}, 117.0f), 299, 299);
  EXPECT_LT((c - 117.0f).abs().max().item<double>(), 1e-4);
}

// Every tensor of a network by its state_dict name, as the export script writes them (no BN step counters).
std::vector<std::pair<std::string, torch::Tensor>> weight_arrays(FidInception& net) {
  std::vector<std::pair<std::string, torch::Tensor>> arrays;
  for (auto& p : net->named_parameters()) arrays.emplace_back(p.key(), p.value().detach());
  for (auto& b : net->named_buffers())
    if (b.key().find("num_batches_tracked") == std::string::npos) arrays.emplace_back(b.key(), b.value());
  return arrays;
}

TEST(FidInception, WeightLoaderListsMissingWrongAndUnexpectedTensors) {
  TempDir dir;
  FidInception net;
  auto arrays = weight_arrays(net);
  EXPECT_EQ(arrays.size(), 470u);  // what the export script writes for pytorch-fid's network
  write_npz(dir / "good.npz", arrays);
  EXPECT_NO_THROW(load_fid_inception(dir / "good.npz", torch::kCPU));

  auto bad = arrays;
  bad.erase(std::find_if(bad.begin(), bad.end(), [](auto& a) { return a.first == "Mixed_6c.branch7x7_2.bn.running_var"; }));
  for (auto& a : bad)
    if (a.first == "Mixed_7c.branch_pool.conv.weight") a.second = torch::zeros({192, 2048, 3, 3});
  bad.emplace_back("fc.weight", torch::zeros({1008, 2048}));
  write_npz(dir / "bad.npz", bad);
  try {
    load_fid_inception(dir / "bad.npz", torch::kCPU);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.rfind(dir / "bad.npz", 0), 0u) << msg;
    EXPECT_NE(msg.find("1 missing, 1 wrong shape or dtype, 1 unexpected"), std::string::npos) << msg;
    EXPECT_NE(msg.find("Mixed_6c.branch7x7_2.bn.running_var"), std::string::npos) << msg;
    EXPECT_NE(msg.find("Mixed_7c.branch_pool.conv.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("fc.weight"), std::string::npos) << msg;
  }
}

// ---- the Frechet distance -------------------------------------------------------------------------------------------

TEST(Frechet, MatchesPytorchFidAtFullSizeIncludingRankDeficient) {
  FM_SKIP_ON_CUDA("the distance is computed on the CPU on every device; its reference, pytorch-fid, runs on the CPU");
  TempDir dir;
  auto ref = run_ref("frechet " + dir.str());
  ASSERT_EQ(ref.code, 0) << ref.out;
  std::ifstream f(dir / "frechet.json");
  auto expected = nlohmann::json::parse(f);
  ASSERT_EQ(expected.size(), 2u);
  for (auto& [pair, value] : expected.items()) {
    auto bar = pair.find('|');
    auto a = read_fid_stats(dir / ("case_" + pair.substr(0, bar) + ".npz"));
    auto b = read_fid_stats(dir / ("case_" + pair.substr(bar + 1) + ".npz"));
    ASSERT_EQ(a.mu.size(0), 2048);
    auto r = frechet_distance(a, b);
    double want = value.get<double>();
    EXPECT_FALSE(r.eps_added) << pair;
    EXPECT_NEAR(r.distance, want, 1e-6 * std::abs(want)) << pair;
  }
}

TEST(Frechet, DiagonalCovariancesHaveTheClosedForm) {
  // Commuting (diagonal) covariances: d^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2, rotated by a random
  // orthogonal Q (the distance is invariant) so that the matrices are dense.
  auto g = torch::make_generator<at::CPUGeneratorImpl>(11);
  const int64_t d = 64;
  auto opt = torch::TensorOptions().dtype(torch::kFloat64);
  auto a = torch::rand({d}, g, opt) + 0.01, b = torch::rand({d}, g, opt) * 2;
  b.slice(0, 0, 10).zero_();  // singular: rank-deficient covariances need no offset in the symmetric form
  auto mu1 = torch::randn({d}, g, opt), mu2 = torch::randn({d}, g, opt);
  auto q = std::get<0>(torch::linalg_qr(torch::randn({d, d}, g, opt)));
  FidStats s1{q.matmul(mu1), q.matmul(torch::diag(a)).matmul(q.t()), -1};
  FidStats s2{q.matmul(mu2), q.matmul(torch::diag(b)).matmul(q.t()), -1};
  s1.sigma = 0.5 * (s1.sigma + s1.sigma.t());
  s2.sigma = 0.5 * (s2.sigma + s2.sigma.t());
  double want = (mu1 - mu2).square().sum().item<double>() + (a.sqrt() - b.sqrt()).square().sum().item<double>();
  auto r = frechet_distance(s1, s2);
  EXPECT_NEAR(r.distance, want, 1e-9 * want);
  EXPECT_FALSE(r.eps_added);
  EXPECT_NEAR(frechet_distance(s2, s2).distance, 0.0, 1e-9);
  // A distance is never negative, whatever the rounding.
  for (int k = 0; k < 8; ++k) {
    auto f = torch::randn({20, d}, g, opt);
    auto s = stats_of(f);
    EXPECT_GE(frechet_distance(s, s).distance, 0.0) << k;
  }
}

TEST(Frechet, RejectsCovariancesWithLargeNegativeEigenvalues) {
  const int64_t d = 16;
  auto opt = torch::TensorOptions().dtype(torch::kFloat64);
  FidStats good{torch::zeros({d}, opt), torch::eye(d, opt), -1};
  FidStats bad = good;
  bad.sigma = torch::eye(d, opt);
  bad.sigma[0][0] = -0.5;  // imaginary diagonal of its root: sqrt(0.5) > 1e-3
  try {
    frechet_distance(good, bad);
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("sigma2 is not positive semi-definite"), std::string::npos) << e.what();
  }
  // Rounding-sized negatives are clamped, as pytorch-fid takes the real part.
  bad.sigma[0][0] = -1e-12;
  EXPECT_NEAR(frechet_distance(good, bad).distance, 1.0, 1e-5);
  FidStats other{torch::zeros({8}, opt), torch::eye(8, opt), -1};
  EXPECT_THROW(frechet_distance(good, other), InputError);
}

// ---- precision and recall ------------------------------------------------------------------------------------------

// The paper's definition computed directly in numpy (tests/ref/precision_recall_ref.py): the radii, every point's
// membership, and precision and recall, in float64, whole and in blocks of 7 rows.
TEST(PrecisionRecall, MatchesThePapersDefinition) {
  TempDir dir;
  auto ref = run(std::string(FM_PYTHON_EXE) + " " + FM_SOURCE_DIR + "/tests/ref/precision_recall_ref.py " + dir.str());
  ASSERT_EQ(ref.code, 0) << ref.out;
  auto arrays = read_npz(dir / "features.npz");
  std::ifstream f(dir / "precision_recall.json");
  auto expected = nlohmann::json::parse(f);
  ASSERT_EQ(expected.size(), 3u);
  double worst_radius = 0, worst_fraction = 0;
  for (auto& [name, want] : expected.items()) {
    const auto& real = arrays.at("real_" + name);
    const auto& fake = arrays.at("fake_" + name);
    ASSERT_EQ(real.scalar_type(), torch::kFloat64);
    const int64_t k = want["k"].get<int64_t>();
    auto as_tensor = [](const nlohmann::json& v) {
      return torch::tensor(v.get<std::vector<double>>(), torch::kFloat64);
    };
    for (int64_t block : {int64_t{0}, int64_t{7}}) {
      auto r_real = knn_radii_squared(real, k, block).sqrt(), r_fake = knn_radii_squared(fake, k, block).sqrt();
      worst_radius = std::max({worst_radius, max_rel(r_real, as_tensor(want["radii_real"])),
                               max_rel(r_fake, as_tensor(want["radii_fake"]))});
      EXPECT_LT(max_rel(r_real, as_tensor(want["radii_real"])), 1e-12) << name;
      auto fake_in_real = in_manifold(fake, real, r_real.square(), block).to(torch::kInt64);
      auto real_in_fake = in_manifold(real, fake, r_fake.square(), block).to(torch::kInt64);
      EXPECT_TRUE(torch::equal(fake_in_real, torch::tensor(want["fake_in_real"].get<std::vector<int64_t>>())))
          << name;
      EXPECT_TRUE(torch::equal(real_in_fake, torch::tensor(want["real_in_fake"].get<std::vector<int64_t>>())))
          << name;
      auto pr = precision_recall(real, fake, k, block);
      EXPECT_NEAR(pr.precision, want["precision"].get<double>(), 1e-12) << name << " block " << block;
      EXPECT_NEAR(pr.recall, want["recall"].get<double>(), 1e-12) << name << " block " << block;
      worst_fraction = std::max({worst_fraction, std::abs(pr.precision - want["precision"].get<double>()),
                                 std::abs(pr.recall - want["recall"].get<double>())});
    }
    // The cases are not degenerate: both figures strictly between 0 and 1.
    EXPECT_GT(want["precision"].get<double>(), 0.1) << name;
    EXPECT_LT(want["recall"].get<double>(), 0.995) << name;
  }
  RecordProperty("radii_max_rel", std::to_string(worst_radius));
  RecordProperty("precision_recall_max_abs", std::to_string(worst_fraction));
  std::printf("precision/recall vs numpy: radii max relative difference %.3g, figures max difference %.3g\n",
              worst_radius, worst_fraction);
}

TEST(PrecisionRecall, ClosedFormsAndRefusals) {
  auto g = torch::make_generator<at::CPUGeneratorImpl>(2);
  auto x = torch::randn({40, 16}, g, torch::TensorOptions().dtype(torch::kFloat64));
  // A set against itself: every point is in its own ball. Against a far copy: none is.
  auto same = precision_recall(x, x);
  EXPECT_EQ(same.precision, 1.0);
  EXPECT_EQ(same.recall, 1.0);
  auto far = precision_recall(x, x + 100.0);
  EXPECT_EQ(far.precision, 0.0);
  EXPECT_EQ(far.recall, 0.0);
  // Points on a line at 0, 1, ..., 9: the 3rd nearest other point of an inner point is 2 away, of an end point 3.
  auto line = torch::zeros({10, 2}, torch::kFloat64);
  line.select(1, 0).copy_(torch::arange(10, torch::kFloat64));
  auto r = knn_radii_squared(line, 3, 4);
  std::vector<double> want = {9, 4, 4, 4, 4, 4, 4, 4, 4, 9};
  EXPECT_TRUE(torch::equal(r, torch::tensor(want, torch::kFloat64))) << r;
  // A query on a ball's boundary is inside (<=).
  auto q = torch::tensor({{-3.0, 0.0}, {-3.0, 0.5}}, torch::kFloat64);
  auto inside = in_manifold(q, line, r, 3);
  EXPECT_TRUE(inside[0].item<bool>());
  EXPECT_FALSE(inside[1].item<bool>());
  EXPECT_THROW(precision_recall(x.slice(0, 0, 3), x), InputError);
  EXPECT_THROW(precision_recall(x, torch::randn({10, 8}, torch::kFloat64)), InputError);
}

// ---- statistics ---------------------------------------------------------------------------------------------------

TEST(FidStats, MomentsMatchTorchCovAcrossBatches) {
  auto g = torch::make_generator<at::CPUGeneratorImpl>(3);
  // Far from zero (as post-ReLU features are), where a naive sum of squares would lose digits.
  auto x = torch::randn({37, 24}, g, torch::TensorOptions().dtype(torch::kFloat64)) * 0.1 + 1e3;
  FeatureMoments m;
  for (int64_t i = 0; i < 37; i += 10) m.add(x.slice(0, i, std::min<int64_t>(37, i + 10)).to(torch::kFloat32).to(torch::kFloat64));
  auto s = m.finish();
  auto xs = x.to(torch::kFloat32).to(torch::kFloat64);
  EXPECT_EQ(s.n, 37);
  EXPECT_LT(max_rel(s.mu, xs.mean(0)), 1e-14);
  EXPECT_LT(max_rel(s.sigma, torch::cov(xs.t())), 1e-9);  // unbiased, as np.cov
  EXPECT_TRUE(torch::equal(s.sigma, s.sigma.t()));
  FeatureMoments one;
  one.add(x.slice(0, 0, 1));
  EXPECT_THROW(one.finish(), InputError);
}

TEST(FidStats, ReadsWhatNumpyAndPytorchFidWrite) {
  TempDir dir;
  auto ref = run_ref("stats-write " + dir.str());
  ASSERT_EQ(ref.code, 0) << ref.out;
  auto want = read_npz(dir / "expected.npz");
  auto compressed = read_fid_stats(dir / "pytorch_fid_style.npz");  // np.savez_compressed, as save_fid_stats
  EXPECT_TRUE(torch::equal(compressed.mu, want.at("mu")));
  EXPECT_TRUE(torch::equal(compressed.sigma, want.at("sigma")));
  EXPECT_EQ(compressed.n, -1);
  auto with_n = read_fid_stats(dir / "plain_with_n.npz");
  EXPECT_TRUE(torch::equal(with_n.sigma, want.at("sigma")));
  EXPECT_EQ(with_n.n, 40);
  EXPECT_TRUE(with_n.resolution.empty());
  EXPECT_EQ(read_fid_stats(dir / "with_resolution.npz").resolution, (std::vector<int64_t>{16, 24}));

  const std::vector<std::pair<std::string, std::string>> faults = {
      {"bad_no_sigma.npz", "no 'sigma' array"},
      {"bad_keys.npz", "no 'mu' array"},
      {"bad_sigma_shape.npz", "sigma has shape [16, 15], expected [16, 16]"},
      {"bad_mu_shape.npz", "mu has shape [1, 16], expected [D]"},
      {"bad_dtype.npz", "mu has dtype Long, expected float64"},
      {"bad_nonfinite.npz", "sigma has non-finite values"},
      {"bad_asymmetric.npz", "sigma is not symmetric"},
      {"bad_n.npz", "'n' must be one integer"},
      {"bad_resolution.npz", "'resolution' must be two integers >= 1"},
      {"bad_resolution_zero.npz", "'resolution' must be two integers >= 1"},
      {"bad_truncated.npz", ""},
      {"does_not_exist.npz", ""},
  };
  for (const auto& [file, words] : faults) {
    try {
      read_fid_stats(dir / file);
      ADD_FAILURE() << file << ": expected InputError";
    } catch (const InputError& e) {
      std::string msg = e.what();
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      EXPECT_NE(msg.find(dir / file), std::string::npos) << msg;
      EXPECT_NE(msg.find(words), std::string::npos) << file << ": " << msg;
    }
  }
}

TEST(FidStats, NumpyReadsWhatFmWrites) {
  TempDir dir;
  auto g = torch::make_generator<at::CPUGeneratorImpl>(9);
  auto s = stats_of(torch::rand({30, 2048}, g, torch::TensorOptions().dtype(torch::kFloat32)));
  s.resolution = {20, 24};
  write_fid_stats(dir / "fm.npz", s);
  auto mine = read_fid_stats(dir / "fm.npz");
  EXPECT_EQ(mine.resolution, (std::vector<int64_t>{20, 24}));
  auto echo = run_ref("stats-echo " + (dir / "fm.npz") + " " + (dir / "echo.npz"));
  ASSERT_EQ(echo.code, 0) << echo.out;
  EXPECT_EQ(nlohmann::json::parse(echo.out).at("n").get<int64_t>(), 30);
  EXPECT_EQ(nlohmann::json::parse(echo.out).at("resolution"), nlohmann::json({20, 24}));
  auto back = read_fid_stats(dir / "echo.npz");
  EXPECT_TRUE(torch::equal(back.mu, s.mu));
  EXPECT_TRUE(torch::equal(back.sigma, s.sigma));
}

// ---- the CLI -----------------------------------------------------------------------------------------------------

TEST(FidCli, FeaturesThenDistanceEndToEnd) {
  TempDir dir;
  // Weights straight from a C++-initialised network (the loader does not care where they came from).
  FidInception net;
  auto arrays = weight_arrays(net);
  write_npz(dir / "w.npz", arrays);
  auto g = torch::make_generator<at::CPUGeneratorImpl>(4);
  auto imgs = torch::randint(0, 256, {5, 20, 24, 3}, g, torch::TensorOptions().dtype(torch::kUInt8));
  write_npz(dir / "imgs.npz", {{"arr_0", imgs}});

  const std::string fm = FM_BINARY;
  auto r = run(fm + " fid-features --weights " + (dir / "w.npz") + " --images npz:" + (dir / "imgs.npz") +
               " --out " + (dir / "s.npz") + " --save-features " + (dir / "f.npy") +
               " --limit 4 --batch 3" + fm::test::device_flag());
  ASSERT_EQ(r.code, 0) << r.out;
  auto s = read_fid_stats(dir / "s.npz");
  EXPECT_EQ(s.n, 4);
  EXPECT_EQ(s.resolution, (std::vector<int64_t>{20, 24}));
  EXPECT_EQ(read_npy(dir / "f.npy").sizes(), (std::vector<int64_t>{4, 2048}));
  // The provenance record beside the statistics.
  std::ifstream record_file(dir / "s.json");
  auto record = nlohmann::json::parse(record_file);
  EXPECT_EQ(record.at("images"), "npz:" + dir / "imgs.npz");
  EXPECT_EQ(record.at("n"), 4);
  EXPECT_NE(record.at("subset").get<std::string>().find("4 of 5 images, evenly spread"), std::string::npos) << record;
  EXPECT_EQ(record.at("weights_crc32").get<std::string>().size(), 8u);
  EXPECT_TRUE(record.at("split").is_null()) << "an npz has no split";
  EXPECT_EQ(record.at("resize"), "pytorch-fid");
  EXPECT_EQ(record.at("resolution"), nlohmann::json({20, 24}));
  EXPECT_EQ(record.at("features"), dir / "f.npy");
  std::ifstream features_record_file(dir / "f.json");  // the features carry the same record
  EXPECT_EQ(nlohmann::json::parse(features_record_file), record);

  // The same statistics twice: exactly 0, never the -0.000000 of rounding.
  r = run(fm + " fid " + (dir / "s.npz") + " " + (dir / "s.npz"));
  ASSERT_EQ(r.code, 0);
  EXPECT_EQ(r.out, "0.000000\n");

  // A stats file against the same images given as an image .npz (arr_0): the features are recomputed, so 0.
  r = run(fm + " fid " + (dir / "s.npz") + " " + (dir / "imgs.npz") + " --weights " + (dir / "w.npz") +
          " --limit 4 --json" + fm::test::device_flag());
  ASSERT_EQ(r.code, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_NEAR(j.at("fid").get<double>(), 0.0, 1e-6);
  EXPECT_EQ(j.at("n_a").get<int64_t>(), 4);
  EXPECT_EQ(j.at("n_b").get<int64_t>(), 4);
  // Each side named with what it is of.
  EXPECT_EQ(j.at("a").at("kind"), "statistics");
  EXPECT_EQ(j.at("a").at("images"), "npz:" + dir / "imgs.npz");
  EXPECT_EQ(j.at("a").at("provenance"), dir / "s.json");
  EXPECT_EQ(j.at("a").at("resize"), "pytorch-fid");
  EXPECT_EQ(j.at("b").at("kind"), "images");
  EXPECT_EQ(j.at("b").at("resolution"), nlohmann::json({20, 24}));
  EXPECT_TRUE(j.at("precision").is_null());
  EXPECT_NE(j.at("precision_recall_skipped").get<std::string>().find("A is statistics"), std::string::npos) << j;

  // Small statistics files with diagonal covariances (the distance has a closed form): a pytorch-fid-style file
  // (no n) gives n null; the plain output is the number alone.
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  write_npz(dir / "pf.npz", {{"mu", torch::zeros({3}, f64)}, {"sigma", torch::diag(torch::tensor({1.0, 4.0, 9.0}, f64))}});
  write_npz(dir / "mine.npz", {{"mu", torch::tensor({1.0, 0.0, 2.0}, f64)},
                               {"sigma", torch::diag(torch::tensor({4.0, 4.0, 1.0}, f64))},
                               {"n", torch::tensor(int64_t{7})}});
  const double want = 1.0 + 4.0 + (1.0 + 0.0 + 4.0);  // |dmu|^2 + sum (sqrt a - sqrt b)^2
  r = run(fm + " fid " + (dir / "pf.npz") + " " + (dir / "mine.npz") + " --json");
  ASSERT_EQ(r.code, 0) << r.out;
  j = nlohmann::json::parse(r.out);
  EXPECT_NEAR(j.at("fid").get<double>(), want, 1e-9);
  EXPECT_TRUE(j.at("n_a").is_null());
  EXPECT_EQ(j.at("n_b").get<int64_t>(), 7);
  r = run(fm + " fid " + (dir / "pf.npz") + " " + (dir / "mine.npz"));
  ASSERT_EQ(r.code, 0);
  EXPECT_NEAR(std::stod(r.out), want, 1e-5);

  // Faults exit 2 with one message: images without weights; a file that is neither.
  EXPECT_EQ(run(fm + " fid " + (dir / "s.npz") + " npz:" + (dir / "imgs.npz") + " 2>/dev/null").code, 2);
  EXPECT_EQ(run(fm + " fid " + (dir / "s.npz") + " " + (dir / "nothing.npz") + " 2>/dev/null").code, 2);
  EXPECT_EQ(run(fm + " fid-features --weights " + (dir / "s.npz") + " --images npz:" + (dir / "imgs.npz") +
                " --out " + (dir / "x.npz") + " 2>/dev/null")
                .code,
            2);
}

// Sets of different resolutions are refused naming both unless asked for by name; a side without a recorded
// resolution is accepted with a warning. Feature files (and image sets) give precision and recall beside FID.
TEST(FidCli, ResolutionsMustMatchAndFeaturesGivePrecisionRecall) {
  TempDir dir;
  FidInception net;
  write_npz(dir / "w.npz", weight_arrays(net));
  auto g = torch::make_generator<at::CPUGeneratorImpl>(8);
  auto u8 = torch::TensorOptions().dtype(torch::kUInt8);
  // Two draws of one distribution (so that their manifolds overlap) and a set of another resolution.
  write_npz(dir / "a.npz", {{"arr_0", torch::randint(0, 256, {6, 16, 16, 3}, g, u8)}});
  write_npz(dir / "b.npz", {{"arr_0", torch::randint(0, 256, {6, 16, 16, 3}, g, u8)}});
  write_npz(dir / "c.npz", {{"arr_0", torch::randint(0, 256, {4, 24, 24, 3}, g, u8)}});
  const std::string fm = std::string(FM_BINARY) + " ";
  const std::string w = " --weights " + dir / "w.npz" + " --batch 6" + fm::test::device_flag();
  auto features = [&](const std::string& set, const std::string& out, const std::string& extra = "") {
    auto r = run(fm + "fid-features --images npz:" + dir / (set + ".npz") + " --out " + dir / (out + "_stats.npz") +
                 " --save-features " + dir / (out + "_feats.npy") + w + extra);
    ASSERT_EQ(r.code, 0) << set;
  };
  features("a", "a");
  features("b", "b");
  auto json_of = [&](const std::string& args, const std::string& err_tag) {
    auto r = fm::test::run_split(fm + "fid " + args + " --json", dir / err_tag);
    EXPECT_EQ(r.code, 0) << args << "\n" << r.err;
    return std::make_pair(r.code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json(), r.err);
  };
  for (const char* sub : {"e1", "e2", "e3"}) fs::create_directories(dir / sub);
  // Features files: FID from their moments, precision and recall with A generated, B the reference.
  auto [by_features, err1] = json_of(dir / "a_feats.npy" + " " + dir / "b_feats.npy", "e1");
  auto fa = read_npy(dir / "a_feats.npy"), fb = read_npy(dir / "b_feats.npy");
  auto want = precision_recall(fb, fa);
  EXPECT_EQ(by_features.at("precision").get<double>(), want.precision);
  EXPECT_EQ(by_features.at("recall").get<double>(), want.recall);
  EXPECT_EQ(by_features.at("k"), 3);
  EXPECT_EQ(by_features.at("a").at("kind"), "features");
  EXPECT_EQ(by_features.at("a").at("resolution"), nlohmann::json({16, 16}));  // from the record beside the features
  const double fid_stats = frechet_distance(read_fid_stats(dir / "a_stats.npz"), read_fid_stats(dir / "b_stats.npz")).distance;
  EXPECT_NEAR(by_features.at("fid").get<double>(), fid_stats, 1e-6 * fid_stats);
  EXPECT_GT(want.precision + want.recall, 0.0);
  // The image sets themselves: the same features, so the same figures.
  auto [by_images, err2] = json_of(dir / "a.npz" + " " + dir / "b.npz" + w, "e2");
  EXPECT_EQ(by_images.at("precision").get<double>(), want.precision);
  EXPECT_EQ(by_images.at("recall").get<double>(), want.recall);
  EXPECT_NEAR(by_images.at("fid").get<double>(), fid_stats, 1e-6 * fid_stats);

  // 24x24 against 16x16: refused naming both, in one line, before any network pass.
  auto r = fm::test::run_split(fm + "fid " + dir / "c.npz" + " " + dir / "b_stats.npz" + w, dir.str());
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_NE(r.err.find("24x24"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("16x16"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--allow-resolution-mismatch"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("fid features"), std::string::npos) << "refused before the features: " << r.err;

  // The rules on statistics alone, with small ones (the distance of 2048-d statistics costs seconds): a recorded
  // mismatch is compared when asked for; pytorch-fid's statistics (no resolution) are accepted with a warning; a
  // different resize (recorded beside the statistics) is compared with a warning naming both.
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto small = [&](const std::string& name, std::vector<int64_t> resolution, const std::string& resize) {
    FidStats st{torch::zeros({3}, f64), torch::eye(3, f64), 10, resolution};
    write_fid_stats(dir / name, st);
    if (!resize.empty()) std::ofstream(provenance_path(dir / name)) << nlohmann::json({{"resize", resize}}).dump();
  };
  small("s16.npz", {16, 16}, "pytorch-fid");
  small("s24.npz", {24, 24}, "pytorch-fid");
  small("pf.npz", {}, "");
  small("clean16.npz", {16, 16}, "clean");
  r = fm::test::run_split(fm + "fid " + dir / "s24.npz" + " " + dir / "s16.npz", dir.str());
  EXPECT_EQ(r.code, 2) << r.err;
  r = fm::test::run_split(fm + "fid " + dir / "s24.npz" + " " + dir / "s16.npz" + " --allow-resolution-mismatch",
                          dir.str());
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "0.000000\n");
  auto [pf, err3] = json_of(dir / "s16.npz" + " " + dir / "pf.npz", "e3");
  EXPECT_TRUE(pf.at("b").at("resolution").is_null());
  EXPECT_TRUE(pf.at("b").at("provenance").is_null());
  EXPECT_NE(err3.find(dir / "pf.npz" + ") records no image resolution"), std::string::npos) << err3;
  r = fm::test::run_split(fm + "fid " + dir / "clean16.npz" + " " + dir / "s16.npz", dir.str());
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("by clean"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("by pytorch-fid"), std::string::npos) << r.err;

  // fid-features --resize clean records it.
  features("c", "c_clean", " --resize clean");
  std::ifstream record_file(dir / "c_clean_stats.json");
  EXPECT_EQ(nlohmann::json::parse(record_file).at("resize"), "clean");
}

}  // namespace
// A signal stops fid-features after the round of batches in flight, keeping their features; --resume then gives the
// statistics of an uninterrupted run, and the kept features go.
TEST(FidCli, AStoppedFeaturePassResumesToTheSameStatistics) {
  TempDir dir;
  FidInception net;
  write_npz(dir / "w.npz", weight_arrays(net));
  auto g = torch::make_generator<at::CPUGeneratorImpl>(5);
  write_npz(dir / "imgs.npz", {{"arr_0", torch::randint(0, 256, {6, 12, 12, 3}, g, torch::kUInt8)}});
  auto options = [&](const std::string& out) {
    FidFeaturesOptions o;
    o.weights = dir / "w.npz";
    o.images = "npz:" + dir / "imgs.npz";
    o.out = out;
    o.images_options.batch = 2;  // three rounds
    o.images_options.device = "cpu";
    return o;
  };
  run_fid_features(options(dir / "full.npz"), dist::this_process_only());
  install_stop_handlers();
  std::raise(SIGUSR1);
  EXPECT_THROW(run_fid_features(options(dir / "part.npz"), dist::this_process_only()), StopRequested);
  reset_stop_request();
  EXPECT_TRUE(std::filesystem::exists(dir / "part.npz.shards/shard_000000000_000002.npz"));
  EXPECT_FALSE(std::filesystem::exists(dir / "part.npz"));
  EXPECT_THROW(run_fid_features(options(dir / "part.npz"), dist::this_process_only()), InputError)
      << "shards of a stopped run need --resume or --overwrite";
  auto o = options(dir / "part.npz");
  o.resume = true;
  run_fid_features(o, dist::this_process_only());
  auto full = read_fid_stats(dir / "full.npz"), part = read_fid_stats(dir / "part.npz");
  EXPECT_TRUE(torch::equal(full.mu, part.mu));
  EXPECT_TRUE(torch::equal(full.sigma, part.sigma));
  EXPECT_FALSE(std::filesystem::exists(dir / "part.npz.shards"));
}

}  // namespace fm
