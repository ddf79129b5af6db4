#pragma once
// 2-D toy distributions, generated in code from the default generator of the tensors' device.
#include <string>
#include <vector>

#include <torch/torch.h>

namespace fm {

const std::vector<std::string>& toy_names();  // eight_gaussians, moons, checkerboard, spirals

// n samples [n, 2]; throws InputError naming the valid names for an unknown one.
torch::Tensor sample_toy(const std::string& name, int64_t n, const torch::TensorOptions& opts = {});

// Half-width of a square window that holds every toy distribution, for plots.
constexpr double kToyPlotLimit = 4.5;

// The checkerboard: a 4x4 board of 2x2 squares on [-4, 4]^2 whose squares with floor(x/2) + floor(y/2) even are
// filled (total area 32), sampled uniformly. Squares are large against the unit noise so that a small MLP can learn
// their sharp edges quickly. True where a point lies on a filled square.
torch::Tensor on_checkerboard(const torch::Tensor& points);
constexpr double kCheckerboardArea = 32.0;

}  // namespace fm
