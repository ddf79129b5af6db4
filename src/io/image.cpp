#include "io/image.h"

#include <stb_image_write.h>

#include "io/file_util.h"

namespace fm {

void write_png(const std::string& path, const torch::Tensor& hwc) {
  auto img = hwc.to(torch::kCPU).to(torch::kUInt8).contiguous();
  TORCH_CHECK(img.dim() == 3 && (img.size(2) == 1 || img.size(2) == 3), "write_png: expected [H, W, 1|3]");
  std::string buf;
  auto sink = [](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size); };
  int w = static_cast<int>(img.size(1)), h = static_cast<int>(img.size(0)), c = static_cast<int>(img.size(2));
  if (!stbi_write_png_to_func(sink, &buf, w, h, c, img.data_ptr(), w * c))
    throw std::runtime_error(path + ": PNG encoding failed");
  write_file_atomic(path, buf);
}

torch::Tensor to_uint8(const torch::Tensor& x) {
  return ((x.to(torch::kFloat32) + 1.0) * 127.5).round().clamp(0, 255).to(torch::kUInt8);
}

torch::Tensor make_grid(const torch::Tensor& nhwc, int64_t cols, int64_t pad, int64_t min_cell) {
  auto x = nhwc.to(torch::kCPU);
  const int64_t scale = std::max<int64_t>(1, min_cell / std::max(x.size(1), x.size(2)));
  if (scale > 1) x = x.repeat_interleave(scale, 1).repeat_interleave(scale, 2);
  int64_t n = x.size(0), h = x.size(1), w = x.size(2), c = x.size(3);
  cols = std::max<int64_t>(1, std::min(cols, n));
  int64_t rows = (n + cols - 1) / cols;
  auto grid = torch::full({rows * (h + pad) + pad, cols * (w + pad) + pad, c}, 255, torch::kUInt8);
  for (int64_t i = 0; i < n; ++i) {
    int64_t r = i / cols, k = i % cols;
    grid.narrow(0, pad + r * (h + pad), h).narrow(1, pad + k * (w + pad), w).copy_(x[i]);
  }
  return grid;
}

namespace {

// Pixel coordinates of points in [-lim, lim]^2 (y up), with a mask of those inside.
std::pair<torch::Tensor, torch::Tensor> to_pixels(const torch::Tensor& pts, double lim, int64_t size) {
  auto p = pts.to(torch::kCPU, torch::kFloat64);
  auto col = ((p.select(1, 0) + lim) / (2 * lim) * size).floor().to(torch::kLong);
  auto row = ((lim - p.select(1, 1)) / (2 * lim) * size).floor().to(torch::kLong);
  auto inside = (col >= 0) & (col < size) & (row >= 0) & (row < size);
  return {row * size + col, inside};
}

}  // namespace

torch::Tensor scatter_panels(const std::vector<torch::Tensor>& points, double lim, int64_t size) {
  const int64_t gap = 8;
  auto canvas = torch::full({size, static_cast<int64_t>(points.size()) * (size + gap) - gap, 3}, 255, torch::kUInt8);
  for (size_t i = 0; i < points.size(); ++i) {
    auto [idx, inside] = to_pixels(points[i], lim, size);
    auto counts = torch::zeros({size * size}, torch::kFloat64);
    counts.index_add_(0, idx.masked_select(inside), torch::ones({inside.sum().item<int64_t>()}, torch::kFloat64));
    // Log density so that sparse regions stay visible next to dense ones.
    auto shade = torch::log1p(counts) / std::log1p(std::max(1.0, counts.max().item<double>()));
    auto panel = torch::stack({255 - 225 * shade, 255 - 160 * shade, 255 - 60 * shade}, 1).round().to(torch::kUInt8);
    canvas.narrow(1, static_cast<int64_t>(i) * (size + gap), size).copy_(panel.view({size, size, 3}));
  }
  // Panel separators.
  for (size_t i = 1; i < points.size(); ++i) canvas.narrow(1, static_cast<int64_t>(i) * (size + gap) - gap, gap).fill_(200);
  return canvas;
}

torch::Tensor trajectory_plot(const torch::Tensor& traj, double lim, int64_t size) {
  auto tr = traj.to(torch::kCPU, torch::kFloat64);
  int64_t steps = tr.size(0);
  auto canvas = torch::full({size * size, 3}, 255, torch::kUInt8);
  // Sub-sample each segment finely enough to draw a connected line.
  const int64_t sub = 16;
  auto s = torch::linspace(0, 1, sub, torch::kFloat64).view({1, sub, 1, 1});
  auto seg = tr.narrow(0, 0, steps - 1).unsqueeze(1) * (1 - s) + tr.narrow(0, 1, steps - 1).unsqueeze(1) * s;
  auto time = (torch::arange(steps - 1, torch::kFloat64).view({-1, 1, 1}) + s.view({1, sub, 1})) / (steps - 1);
  auto pts = seg.reshape({-1, 2});
  auto tt = time.expand({steps - 1, sub, tr.size(1)}).reshape({-1});
  auto [idx, inside] = to_pixels(pts, lim, size);
  auto color = torch::stack({40 + 200 * tt, 60 + 0 * tt, 230 - 200 * tt}, 1).round().to(torch::kUInt8);
  canvas.index_put_({idx.masked_select(inside)}, color.index({inside}));
  // Start and end points in solid colour.
  for (int64_t end : {int64_t(0), steps - 1}) {
    auto [i2, in2] = to_pixels(tr[end], lim, size);
    auto c = end == 0 ? torch::tensor({0, 0, 160}, torch::kUInt8) : torch::tensor({200, 0, 0}, torch::kUInt8);
    for (int64_t dr : {-1, 0, 1})
      for (int64_t dc : {-1, 0, 1}) {
        auto j = (i2 + dr * size + dc).clamp(0, size * size - 1);
        canvas.index_put_({j.masked_select(in2)}, c);
      }
  }
  return canvas.view({size, size, 3});
}

}  // namespace fm
