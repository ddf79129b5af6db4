#pragma once
// PNG output for people: image grids and 2-D plots. Pixels are uint8 HWC tensors on the CPU.
#include <string>
#include <vector>

#include <torch/torch.h>

namespace fm {

// Writes a uint8 [H, W, C] tensor (C = 1 or 3) as PNG, atomically.
void write_png(const std::string& path, const torch::Tensor& hwc);

// Maps model-space images in [-1, 1] to uint8 as the ADM/EDM evaluators do: clip(round((x + 1) * 127.5)).
torch::Tensor to_uint8(const torch::Tensor& x);

// Tiles uint8 [N, H, W, C] images into one grid, `cols` per row, `pad` white pixels apart. Images smaller than
// `min_cell` are enlarged by the largest integer factor that keeps them within it (nearest neighbour, so pixels stay
// sharp): a grid of 16x16 samples is readable on a screen without zooming.
torch::Tensor make_grid(const torch::Tensor& nhwc, int64_t cols, int64_t pad = 2, int64_t min_cell = 64);

// 2-D scatter plots side by side, each panel `size` pixels square over [-lim, lim]^2, darker where denser.
torch::Tensor scatter_panels(const std::vector<torch::Tensor>& points, double lim, int64_t size = 360);

// Trajectories [T, N, 2] drawn as polylines coloured from blue (t=0, noise) to red (t=1, data).
torch::Tensor trajectory_plot(const torch::Tensor& traj, double lim, int64_t size = 480);

}  // namespace fm
