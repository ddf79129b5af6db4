// Tests of the fused GroupNorm (+ shift, + SiLU) CPU kernels (src/kernels/group_norm_silu.*) against LibTorch's
// group_norm -> silu evaluated in float64 on the same inputs.
#include <gtest/gtest.h>

#include <string>
#include <tuple>

#include "kernels/kernels.h"

namespace fm {
namespace {

struct Inputs {
  torch::Tensor x, weight, bias, shift, dy;
};

// Channels-last float32 inputs of the given shape; shift [N, C] when with_shift.
Inputs make_inputs(std::vector<int64_t> shape, bool with_shift, double offset = 0.0, double scale = 1.0) {
  const int64_t n = shape[0], c = shape[1];
  Inputs in;
  in.x = (offset + scale * torch::randn(shape)).contiguous(torch::MemoryFormat::ChannelsLast);
  in.weight = 1 + 0.5 * torch::randn({c});
  in.bias = 0.5 * torch::randn({c});
  if (with_shift) in.shift = torch::randn({n, c});
  in.dy = torch::randn(shape).contiguous(torch::MemoryFormat::ChannelsLast);
  return in;
}

struct Result {
  torch::Tensor y, dx, dweight, dbias, dshift;
  std::string grad_fn;
};

// The op and its gradients, in the inputs' dtype (cast to dtype first) and layout.
Result run(const Inputs& in, int64_t groups, bool silu, torch::Dtype dtype, bool fused_op) {
  auto leaf = [&](const torch::Tensor& t) {
    return t.defined() ? t.to(dtype).detach().requires_grad_(true) : t;
  };
  auto x = leaf(in.x), w = leaf(in.weight), b = leaf(in.bias), e = leaf(in.shift);
  torch::Tensor y;
  if (fused_op) {
    y = kernels::group_norm_silu(x, groups, w, b, 1e-5, e, silu);
  } else {
    auto h = e.defined() ? x + e.reshape({x.size(0), x.size(1), 1, 1}) : x;
    y = torch::group_norm(h, groups, w, b, 1e-5);
    if (silu) y = torch::silu(y);
  }
  (y * in.dy.to(dtype)).sum().backward();
  Result r{y.detach(), x.grad(), w.grad(), b.grad(), e.defined() ? e.grad() : torch::Tensor(),
           y.grad_fn() ? y.grad_fn()->name() : ""};
  return r;
}

double max_err(const torch::Tensor& got, const torch::Tensor& want) {
  return (got.to(torch::kFloat64) - want).abs().max().item<double>();
}

class GroupNormSiluCase : public ::testing::TestWithParam<std::tuple<std::vector<int64_t>, int64_t, bool, bool>> {};

TEST_P(GroupNormSiluCase, FusedKernelMatchesFloat64Reference) {
  if (!kernels::fused_cpu_group_norm_available()) GTEST_SKIP() << "no AVX2 + FMA on this CPU: the composite path runs";
  const auto& [shape, groups, silu, with_shift] = GetParam();
  torch::manual_seed(0);
  const auto in = make_inputs(shape, with_shift);
  const auto got = run(in, groups, silu, torch::kFloat32, true);
  const auto want = run(in, groups, silu, torch::kFloat64, false);
  EXPECT_NE(got.grad_fn.find("GroupNormSilu"), std::string::npos) << "fused kernel not taken: " << got.grad_fn;
  EXPECT_TRUE(got.y.is_contiguous(torch::MemoryFormat::ChannelsLast));
  // Outputs are O(1); gradients of weight and bias are sums over N*H*W terms, so their scale grows with it.
  const double terms = static_cast<double>(shape[0] * shape[2] * shape[3]);
  EXPECT_LT(max_err(got.y, want.y), 2e-5);
  EXPECT_LT(max_err(got.dx, want.dx), 1e-4);
  EXPECT_LT(max_err(got.dweight, want.dweight), 2e-6 * terms);
  EXPECT_LT(max_err(got.dbias, want.dbias), 2e-6 * terms);
  if (with_shift) EXPECT_LT(max_err(got.dshift, want.dshift), 2e-6 * shape[2] * shape[3]);
}

// Shapes: one pixel, more than one block of 128 rows (the float partial sums move to double), one channel per
// group, the U-Net's 32 groups of 8 channels.
INSTANTIATE_TEST_SUITE_P(
    Shapes, GroupNormSiluCase,
    ::testing::Values(std::make_tuple(std::vector<int64_t>{3, 64, 8, 12}, int64_t{32}, true, true),
                      std::make_tuple(std::vector<int64_t>{3, 64, 8, 12}, int64_t{32}, true, false),
                      std::make_tuple(std::vector<int64_t>{3, 64, 8, 12}, int64_t{32}, false, true),
                      std::make_tuple(std::vector<int64_t>{2, 16, 5, 3}, int64_t{4}, false, false),
                      std::make_tuple(std::vector<int64_t>{2, 32, 16, 17}, int64_t{32}, true, true),
                      std::make_tuple(std::vector<int64_t>{2, 8, 9, 7}, int64_t{8}, true, false),
                      std::make_tuple(std::vector<int64_t>{4, 256, 1, 1}, int64_t{32}, true, true)));

// Activations far from zero: the variance must not cancel away. The fused kernel may be no less accurate than
// LibTorch's own float32 kernel on the same inputs.
TEST(GroupNormSilu, LargeMeanIsAsAccurateAsLibTorch) {
  if (!kernels::fused_cpu_group_norm_available()) GTEST_SKIP() << "no AVX2 + FMA on this CPU";
  torch::manual_seed(1);
  const auto in = make_inputs({2, 64, 16, 16}, true, 300.0, 0.05);
  const auto got = run(in, 32, true, torch::kFloat32, true);
  const auto aten = run(in, 32, true, torch::kFloat32, false);
  const auto want = run(in, 32, true, torch::kFloat64, false);
  EXPECT_LE(max_err(got.y, want.y), 1.5 * max_err(aten.y, want.y) + 1e-5);
  EXPECT_LE(max_err(got.dx, want.dx), 1.5 * max_err(aten.dx, want.dx) + 1e-4);
  EXPECT_LE(max_err(got.dweight, want.dweight), 1.5 * max_err(aten.dweight, want.dweight) + 1e-3);
  EXPECT_LT(max_err(got.y, want.y), 0.05);
}

// The batch is split over threads sample by sample and the per-sample gradient shares are summed in one order, so
// the thread count changes nothing, to the bit.
TEST(GroupNormSilu, ThreadCountDoesNotChangeTheResult) {
  if (!kernels::fused_cpu_group_norm_available()) GTEST_SKIP() << "no AVX2 + FMA on this CPU";
  torch::manual_seed(3);
  const auto in = make_inputs({5, 64, 8, 8}, true);
  const int threads = torch::get_num_threads();
  torch::set_num_threads(1);
  const auto one = run(in, 32, true, torch::kFloat32, true);
  torch::set_num_threads(3);
  const auto three = run(in, 32, true, torch::kFloat32, true);
  torch::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(one.y, three.y));
  EXPECT_TRUE(torch::equal(one.dx, three.dx));
  EXPECT_TRUE(torch::equal(one.dweight, three.dweight));
  EXPECT_TRUE(torch::equal(one.dshift, three.dshift));
}

// Inputs the kernel does not take (NCHW, float64) give LibTorch's result, through its own ops.
TEST(GroupNormSilu, OtherLayoutsAndDtypesTakeTheCompositePath) {
  torch::manual_seed(2);
  const auto in = make_inputs({2, 32, 4, 4}, true);
  Inputs nchw = in;
  nchw.x = in.x.contiguous();
  for (auto [inputs, dtype] : {std::make_pair(nchw, torch::kFloat32), std::make_pair(in, torch::kFloat64)}) {
    const auto got = run(inputs, 32, true, dtype, true);
    const auto want = run(inputs, 32, true, dtype, false);
    EXPECT_EQ(got.grad_fn.find("GroupNormSilu"), std::string::npos);
    EXPECT_EQ(max_err(got.y, want.y.to(torch::kFloat64)), 0.0);
  }
}

}  // namespace
}  // namespace fm
