#pragma once
// 2-D toy distributions, generated in code from the default generator of the tensors' device.
#include <string>
#include <vector>

#include <torch/torch.h>

namespace fm {

const std::vector<std::string>& toy_names();  // eight_gaussians, moons, checkerboard, spirals

// n samples [n, 2]; throws InputError naming the valid names for an unknown one.
torch::Tensor sample_toy(const std::string& name, int64_t n, const torch::TensorOptions& opts = {});

// Half-width of a square window that holds the distribution, for plots.
constexpr double kToyPlotLimit = 3.0;

// The checkerboard: a 4x4 board on [-2, 2]^2 whose squares with floor(x) + floor(y) even are filled (total area 8),
// sampled uniformly. True where a point lies on a filled square.
torch::Tensor on_checkerboard(const torch::Tensor& points);
constexpr double kCheckerboardArea = 8.0;

}  // namespace fm
