// Tests of the Winograd F(4x4, 3x3) weight gradient (src/nn/winograd.*) and of the convolution that uses it
// (src/nn/conv2d.*), against LibTorch's own convolution backward.
#include <gtest/gtest.h>

#include <ATen/autocast_mode.h>

#include <string>
#include <vector>

#include "kernels/conv3x3.h"
#include "kernels/kernels.h"
#include "kernels/winograd.h"

namespace fm {
namespace {

namespace winograd = kernels::winograd;

// The routing of kernels/kernels.h for a torch::nn::Conv2d holder.
bool winograd_applies(torch::nn::Conv2d conv, const torch::Tensor& x) { return kernels::winograd_applies(*conv, x); }
torch::Tensor conv2d(torch::nn::Conv2d conv, const torch::Tensor& x) { return kernels::conv2d(*conv, x); }

torch::Tensor reference_weight_grad(const torch::Tensor& x, const torch::Tensor& dy) {
  auto w = torch::zeros({dy.size(1), x.size(1), 3, 3}, x.options());
  return std::get<1>(at::convolution_backward(dy, x, w, std::nullopt, {1, 1}, {1, 1}, {1, 1}, false, {0, 0}, 1,
                                              {false, true, false}));
}

double rel_err(const torch::Tensor& got, const torch::Tensor& want) {
  auto g = got.to(torch::kFloat64), w = want.to(torch::kFloat64);
  return ((g - w).abs().max() / w.abs().max()).item<double>();
}

class WinogradShape : public ::testing::TestWithParam<std::vector<int64_t>> {};  // N, C, H, W, C_out

// Float64 isolates the algebra (transforms, tiling, edges, blocks) from rounding.
TEST_P(WinogradShape, WeightGradMatchesConvolutionBackwardInFloat64) {
  const auto s = GetParam();
  torch::manual_seed(0);
  auto x = torch::randn({s[0], s[1], s[2], s[3]}, torch::kFloat64);
  auto dy = torch::randn({s[0], s[4], s[2], s[3]}, torch::kFloat64);
  auto want = reference_weight_grad(x, dy);
  auto got = winograd::conv3x3_weight_grad(x, dy);
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_LT(rel_err(got, want), 1e-12);
  // The layout of the inputs does not matter.
  auto got_cl = winograd::conv3x3_weight_grad(x.contiguous(at::MemoryFormat::ChannelsLast),
                                              dy.contiguous(at::MemoryFormat::ChannelsLast));
  EXPECT_LT(rel_err(got_cl, want), 1e-12);
}

// Sizes that are not multiples of the tile, a single pixel, a 2-pixel strip, 3 channels, and more tiles than one
// block holds (so that blocks accumulate).
INSTANTIATE_TEST_SUITE_P(Shapes, WinogradShape,
                         ::testing::Values(std::vector<int64_t>{2, 3, 7, 5, 4}, std::vector<int64_t>{2, 16, 1, 1, 8},
                                           std::vector<int64_t>{3, 8, 2, 6, 8}, std::vector<int64_t>{1, 5, 9, 13, 3},
                                           std::vector<int64_t>{12, 32, 32, 32, 16}));

// Float32 through the transforms loses a little against oneDNN's direct sum (entries up to 8 in A, 5 in B^T); the
// bound is about 3x the error measured on these shapes, and 10x what oneDNN itself makes.
TEST(Winograd, Float32WeightGradIsCloseToFloat64) {
  torch::manual_seed(1);
  for (auto s : std::vector<std::vector<int64_t>>{{8, 32, 32, 32, 32}, {4, 64, 8, 8, 64}, {4, 96, 16, 16, 32}}) {
    auto x = torch::randn({s[0], s[1], s[2], s[3]}, torch::kFloat64);
    auto dy = torch::randn({s[0], s[4], s[2], s[3]}, torch::kFloat64);
    auto want = reference_weight_grad(x, dy);
    auto got = winograd::conv3x3_weight_grad(x.to(torch::kFloat32).contiguous(at::MemoryFormat::ChannelsLast),
                                             dy.to(torch::kFloat32).contiguous(at::MemoryFormat::ChannelsLast));
    EXPECT_EQ(got.scalar_type(), torch::kFloat32);
    EXPECT_LT(rel_err(got, want), 2e-5) << "shape " << torch::IntArrayRef(s);
  }
}

// With several threads each thread takes its own blocks of tiles (in a build with parallel kernels,
// tests/test_parallel.cpp) and its own share of the weight gradient: the results stay those of the float64 reference,
// on a shape whose tiles do not divide evenly among 3 threads.
TEST(Winograd, SeveralThreadsGiveTheSameResults) {
  torch::manual_seed(6);
  auto x = torch::randn({12, 32, 30, 30}, torch::kFloat64);
  auto w = torch::randn({16, 32, 3, 3}, torch::kFloat64);
  auto dy = torch::randn({12, 16, 30, 30}, torch::kFloat64);
  const auto want_dw = reference_weight_grad(x, dy);
  const auto want_y = torch::conv2d(x, w, {}, 1, 1);
  const int threads = torch::get_num_threads();
  torch::set_num_threads(3);
  for (int round = 0; round < 5; ++round) {  // a race between threads need not show the first time
    EXPECT_LT(rel_err(winograd::conv3x3_weight_grad(x, dy), want_dw), 1e-12) << "round " << round;
    EXPECT_LT(rel_err(winograd::conv3x3(x, w, {}), want_y), 1e-12) << "round " << round;
  }
  torch::set_num_threads(threads);
}

// The hand-written transforms against the matrices of Lavin & Gray's F(4x4, 3x3).
TEST(Winograd, TransformsEqualTheirMatrices) {
  const auto f64 = torch::kFloat64;
  auto bt = torch::tensor({4, 0, -5, 0, 1, 0, 0, -4, -4, 1, 1, 0, 0, 4, -4, -1, 1, 0,
                           0, -2, -1, 2, 1, 0, 0, 2, -1, -2, 1, 0, 0, 4, 0, -5, 0, 1}, f64).view({6, 6});
  auto at = torch::tensor({1, 1, 1, 1, 1, 0, 0, 1, -1, 2, -2, 0, 0, 1, 1, 4, 4, 0, 0, 1, -1, 8, -8, 1}, f64)
                .view({4, 6});
  torch::manual_seed(2);
  const int64_t n = 2, c = 3, h = 6, w = 9, th = 2, tw = 3;
  auto x = torch::randn({n, c, h, w}, f64);
  // Patches by hand: 6x6 input patches from one pixel before each tile, 4x4 gradient patches at the tile.
  auto xp = torch::constant_pad_nd(x, {1, 4 * tw + 2 - w - 1, 1, 4 * th + 2 - h - 1});
  auto d = xp.unfold(2, 6, 4).unfold(3, 6, 4);  // n, c, th, tw, 6, 6
  auto want_v = torch::einsum("ik,nchwkl,jl->ijnhwc", {bt, d, bt}).reshape({36, n * th * tw, c});
  EXPECT_LT(rel_err(winograd::input_tiles(x), want_v), 1e-14);
  auto gp = torch::constant_pad_nd(x, {0, 4 * tw - w, 0, 4 * th - h});
  auto g = gp.unfold(2, 4, 4).unfold(3, 4, 4);  // n, c, th, tw, 4, 4
  auto want_m = torch::einsum("ki,nchwkl,lj->ijnhwc", {at, g, at}).reshape({36, n * th * tw, c});
  EXPECT_LT(rel_err(winograd::output_grad_tiles(x), want_m), 1e-14);
  EXPECT_EQ(winograd::tile_count(x.sizes()), n * th * tw);
}

// The forward pass through the same tiles against LibTorch's conv2d; float64 for the algebra (with and without bias,
// edges, several blocks), and float32 within a bound.
TEST_P(WinogradShape, ForwardMatchesConv2dInFloat64) {
  const auto s = GetParam();
  torch::manual_seed(4);
  auto x = torch::randn({s[0], s[1], s[2], s[3]}, torch::kFloat64);
  auto w = torch::randn({s[4], s[1], 3, 3}, torch::kFloat64);
  auto b = torch::randn({s[4]}, torch::kFloat64);
  EXPECT_LT(rel_err(winograd::conv3x3(x, w, b), torch::conv2d(x, w, b, 1, 1)), 1e-12);
  auto y = winograd::conv3x3(x, w, {});
  EXPECT_TRUE(y.is_contiguous(at::MemoryFormat::ChannelsLast));
  EXPECT_LT(rel_err(y, torch::conv2d(x, w, {}, 1, 1)), 1e-12);
  // The input gradient is the same convolution with the kernel flipped and its channels swapped.
  auto dy = torch::randn({s[0], s[4], s[2], s[3]}, torch::kFloat64);
  auto dx = std::get<0>(at::convolution_backward(dy, x, w, std::nullopt, {1, 1}, {1, 1}, {1, 1}, false, {0, 0}, 1,
                                                 {true, false, false}));
  EXPECT_LT(rel_err(winograd::conv3x3(dy, w.flip({2, 3}).transpose(0, 1), {}), dx), 1e-12);
}

TEST(Winograd, Float32ForwardIsCloseToFloat64) {
  torch::manual_seed(5);
  for (auto s : std::vector<std::vector<int64_t>>{{8, 32, 32, 32, 32}, {4, 64, 8, 8, 64}, {4, 96, 16, 16, 32}}) {
    auto x = torch::randn({s[0], s[1], s[2], s[3]}, torch::kFloat64);
    auto w = torch::randn({s[4], s[1], 3, 3}, torch::kFloat64) / std::sqrt(9.0 * s[1]);
    auto b = torch::randn({s[4]}, torch::kFloat64);
    auto want = torch::conv2d(x, w, b, 1, 1);
    auto got = winograd::conv3x3(x.to(torch::kFloat32).contiguous(at::MemoryFormat::ChannelsLast),
                                 w.to(torch::kFloat32), b.to(torch::kFloat32));
    EXPECT_LT(rel_err(got, want), 2e-5) << "shape " << torch::IntArrayRef(s);
  }
}

TEST(Winograd, RejectsMismatchedShapes) {
  auto x = torch::randn({2, 4, 8, 8});
  EXPECT_THROW(winograd::conv3x3_weight_grad(x, torch::randn({2, 4, 4, 4})), c10::Error);
  EXPECT_THROW(winograd::conv3x3_weight_grad(x, torch::randn({2, 4, 8, 8}, torch::kFloat64)), c10::Error);
  EXPECT_THROW(winograd::conv3x3_weight_grad(x.to(torch::kInt32), torch::randn({2, 4, 8, 8})), c10::Error);
  EXPECT_THROW(winograd::conv3x3(x, torch::randn({5, 3, 3, 3}), {}), c10::Error);
  EXPECT_THROW(winograd::conv3x3(x, torch::randn({5, 4, 1, 1}), {}), c10::Error);
  EXPECT_THROW(winograd::conv3x3(x, torch::randn({5, 4, 3, 3}), torch::randn({4})), c10::Error);
}

struct Grads {
  torch::Tensor y, dx, dw, db;
  std::string grad_fn;
};

Grads run_conv(torch::nn::Conv2d conv, const torch::Tensor& x_in, const torch::Tensor& dy, bool ours) {
  conv->zero_grad();
  auto x = x_in.detach().requires_grad_(true);
  auto y = ours ? conv2d(conv, x) : conv->forward(x);
  (y * dy).sum().backward();
  return {y.detach(), x.grad(), conv->weight.grad().clone(), conv->bias.grad().clone(), y.grad_fn()->name()};
}

// Forward pass and both gradients are Winograd's, within float32 rounding of oneDNN's; the outputs keep the input's
// layout.
TEST(Conv2d, WinogradConvolutionGivesTheModulesGradients) {
  torch::manual_seed(3);
  for (int64_t c_in : {32, 64}) {
    torch::nn::Conv2d conv(torch::nn::Conv2dOptions(c_in, 48, 3).padding(1));
    for (auto layout : {at::MemoryFormat::Contiguous, at::MemoryFormat::ChannelsLast}) {
      auto x = torch::randn({4, c_in, 12, 10}).contiguous(layout);
      auto dy = torch::randn({4, 48, 12, 10}).contiguous(layout);
      ASSERT_TRUE(winograd_applies(conv, x));
      auto ours = run_conv(conv, x, dy, true), theirs = run_conv(conv, x, dy, false);
      SCOPED_TRACE("c_in " + std::to_string(c_in) + (layout == at::MemoryFormat::Contiguous ? " NCHW" : " NHWC"));
      EXPECT_NE(ours.grad_fn, theirs.grad_fn);  // it did take the custom op
      EXPECT_LT(rel_err(ours.y, theirs.y), 2e-5);
      EXPECT_LT(rel_err(ours.dx, theirs.dx), 2e-5);
      EXPECT_LT(rel_err(ours.dw, theirs.dw), 2e-5);
      EXPECT_LT(rel_err(ours.db, theirs.db), 1e-6);
      EXPECT_EQ(ours.dw.sizes(), conv->weight.sizes());
      EXPECT_TRUE(ours.y.is_contiguous(layout));
      EXPECT_TRUE(ours.dx.is_contiguous(layout));
    }
  }
}

TEST(Conv2d, OtherConvolutionsTakeTheModulesForward) {
  auto x = torch::randn({2, 32, 8, 8});
  auto conv3 = [](int64_t in, int64_t out, int64_t stride) {
    return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).stride(stride).padding(1));
  };
  EXPECT_TRUE(winograd_applies(conv3(32, 32, 1), x));
  EXPECT_FALSE(winograd_applies(conv3(32, 32, 2), x));                    // the downsampling conv
  EXPECT_FALSE(winograd_applies(conv3(3, 32, 1), torch::randn({2, 3, 8, 8})));  // the first conv
  EXPECT_FALSE(winograd_applies(conv3(32, 3, 1), x));                     // the last conv
  EXPECT_FALSE(winograd_applies(torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 32, 1)), x));
  auto conv = conv3(32, 32, 1);
  EXPECT_FALSE(winograd_applies(conv, x.to(torch::kFloat64)));
  {
    torch::NoGradGuard no_grad;  // sampling
    EXPECT_FALSE(winograd_applies(conv, x));
  }
  at::autocast::set_autocast_enabled(at::kCPU, true);
  EXPECT_FALSE(winograd_applies(conv, x));  // CPU autocast: oneDNN's bf16 convolutions
  at::autocast::set_autocast_enabled(at::kCPU, false);
  EXPECT_TRUE(winograd_applies(conv, x));
  conv->weight.requires_grad_(false);  // a frozen weight (the likelihood's input-only gradients)
  EXPECT_FALSE(winograd_applies(conv, x));
  auto y = conv2d(conv, x.requires_grad_(true));
  EXPECT_EQ(y.grad_fn()->name(), conv->forward(x).grad_fn()->name());
}

}  // namespace
}  // namespace fm
