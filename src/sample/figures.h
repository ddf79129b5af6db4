#pragma once
// Figures a person looks at after a run: 2-D scatter and trajectory plots, image grids.
#include <string>

#include <torch/torch.h>

#include "nn/velocity_field.h"
#include "sample/generate.h"

namespace fm {

// samples.png (data beside samples) and trajectories.png for a 2-D toy model, into `dir`.
// Returns the samples.
torch::Tensor write_toy_figures(VelocityField& model, const std::string& toy, const SolveSettings& s, int64_t n,
                                const std::string& dir, const torch::Device& device);

// A grid PNG of images in [-1, 1] ([N, C, H, W]).
void write_image_grid(const std::string& path, const torch::Tensor& images);

}  // namespace fm
