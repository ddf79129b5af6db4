#pragma once
// Figures a person looks at after a run: 2-D scatter and trajectory plots, image grids.
#include <string>

#include <torch/torch.h>

#include "nn/velocity_field.h"
#include "sample/generate.h"

namespace fm {

// samples.png (the data points [m, 2] beside n samples) and trajectories.png for a 2-D model, into `dir`.
// Returns the samples.
torch::Tensor write_toy_figures(VelocityField& model, const torch::Tensor& data, const SolveSettings& s, int64_t n,
                                const std::string& dir, const torch::Device& device);

// Columns of a grid of n images: square-ish (ceil(sqrt(n)), 8 for 64), or when the images cycle through K classes
// (labels i mod K) the multiple of K nearest sqrt(n), so that each column holds one class.
int64_t grid_columns(int64_t n, int64_t cycled_classes = 0);

// A grid PNG of images in [-1, 1] ([N, C, H, W]).
void write_image_grid(const std::string& path, const torch::Tensor& images, int64_t cycled_classes = 0);

}  // namespace fm
