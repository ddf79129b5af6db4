#pragma once
// 2-D toy distributions, generated in code from the default generator of the tensors' device.
#include <string>
#include <vector>

#include <torch/torch.h>

#include "config/choices.h"

namespace fm {

// n samples [n, 2].
torch::Tensor sample_toy(ToyData toy, int64_t n, const torch::TensorOptions& opts = {});
// The distribution a data spec toy:NAME names ("" is the checkerboard); InputError naming the valid names otherwise.
ToyData parse_toy(const std::string& name);

// Half-width of a square window that holds every toy distribution, for plots.
constexpr double kToyPlotLimit = 4.5;

// The checkerboard: a 4x4 board of 2x2 squares on [-4, 4]^2 whose squares with floor(x/2) + floor(y/2) even are
// filled (total area 32), sampled uniformly. Squares are large against the unit noise so that a small MLP can learn
// their sharp edges quickly. True where a point lies on a filled square.
torch::Tensor on_checkerboard(const torch::Tensor& points);
constexpr double kCheckerboardArea = 32.0;

}  // namespace fm
