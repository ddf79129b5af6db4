#include "data/shapes.h"

#include <cmath>

#include <ATen/CPUGeneratorImpl.h>

#include "util/error.h"

namespace fm {

ShapesSet make_shapes(int64_t n, int64_t res, uint64_t seed, double gradient_fraction) {
  TORCH_CHECK(n > 0, "make_shapes: n must be > 0");
  TORCH_CHECK(res >= 8, "make_shapes: res must be >= 8");
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  const auto i64 = torch::TensorOptions().dtype(torch::kLong);

  // Per-image parameters, drawn in a fixed order so that a seed fixes the set.
  auto labels = (torch::arange(n, i64) % kShapeClasses).index_select(0, torch::randperm(n, gen, i64));
  auto half = 0.5 * res * (0.4 + 0.3 * torch::rand({n}, gen, f32));
  auto cx = half + torch::rand({n}, gen, f32) * (res - 2 * half);
  auto cy = half + torch::rand({n}, gen, f32) * (res - 2 * half);
  auto c0 = torch::randint(0, 256, {n, 3}, gen, i64);
  // The gradient's far end stays within 40 of its start and the object sits 96-160 away (mod 256) from the start,
  // which leaves at least 56 between the object and any background pixel in every channel.
  auto c1 = (c0 + torch::randint(-40, 41, {n, 3}, gen, i64)).clamp(0, 255);
  auto fg = (c0 + torch::randint(96, 161, {n, 3}, gen, i64)) % 256;
  auto is_gradient = torch::rand({n}, gen, f32) < gradient_fraction;
  auto angle = torch::rand({n}, gen, f32) * (2 * M_PI);

  // Rendered in chunks so that the float temporaries stay small for large sets.
  auto images = torch::empty({n, 3, res, res}, torch::kUInt8);
  auto masks = torch::empty({n, res, res}, torch::kBool);
  auto coord = torch::arange(res, f32) + 0.5;  // pixel centres
  auto X = coord.view({1, 1, res}), Y = coord.view({1, res, 1});
  const int64_t chunk = 4096;
  for (int64_t b = 0; b < n; b += chunk) {
    const int64_t m = std::min(chunk, n - b);
    auto col = [&](const torch::Tensor& v) { return v.narrow(0, b, m).view({m, 1, 1}); };
    auto dx = X - col(cx), dy = Y - col(cy), h = col(half), kind = col(labels);
    auto circle = dx * dx + dy * dy <= h * h;
    auto square = (dx.abs() <= h) & (dy.abs() <= h);
    auto triangle = (dy <= h) & (2 * dx.abs() <= dy + h);  // apex at the top, base 2h wide at the bottom
    auto mask = torch::where(kind == kShapeCircle, circle, torch::where(kind == kShapeSquare, square, triangle));

    // Background: c0 everywhere, or c0 -> c1 along a random direction across the image.
    auto a = col(angle);
    auto proj = (X - res / 2.0) * a.cos() + (Y - res / 2.0) * a.sin();
    auto lo = proj.amin({1, 2}, true), hi = proj.amax({1, 2}, true);
    auto t = torch::where(col(is_gradient), (proj - lo) / (hi - lo).clamp_min(1e-6), torch::zeros_like(proj));
    auto rgb = [&](const torch::Tensor& c) { return c.narrow(0, b, m).to(torch::kFloat32).view({m, 3, 1, 1}); };
    auto c0f = rgb(c0), c1f = rgb(c1);
    auto bg = (c0f + t.unsqueeze(1) * (c1f - c0f)).round();
    images.narrow(0, b, m).copy_(torch::where(mask.unsqueeze(1), rgb(fg), bg));
    masks.narrow(0, b, m).copy_(mask);
  }

  ShapesSet s;
  s.images = images;
  s.labels = labels;
  s.masks = masks;
  s.background = c0.to(torch::kUInt8);
  s.object = fg.to(torch::kUInt8);
  s.gradient = is_gradient;
  return s;
}

Dataset shapes_dataset(const ShapesSet& s) {
  Dataset ds;
  ds.images = s.images;
  ds.labels = s.labels;
  ds.num_classes = kShapeClasses;
  ds.class_names = {"circle", "square", "triangle"};  // the order of ShapeKind
  return ds;
}

std::vector<ColourCount> colour_counts(const torch::Tensor& chw) {
  TORCH_CHECK(chw.dim() == 3 && chw.size(0) == 3 && chw.scalar_type() == torch::kUInt8,
              "colour_counts: expected a uint8 [3, H, W] image");
  auto c = chw.to(torch::kCPU).to(torch::kLong).reshape({3, -1});
  auto packed = std::get<0>((c[0] * 65536 + c[1] * 256 + c[2]).sort());
  auto [values, inverse, counts] = torch::unique_consecutive(packed, /*return_inverse=*/false, /*return_counts=*/true);
  // Most frequent first; among equal counts the smaller packed colour first (a stable sort keeps unique's order).
  auto order = std::get<1>(counts.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  std::vector<ColourCount> out;
  for (int64_t k = 0; k < order.size(0); ++k) {
    int64_t i = order[k].item<int64_t>(), v = values[i].item<int64_t>();
    out.push_back({{static_cast<uint8_t>(v >> 16), static_cast<uint8_t>((v >> 8) & 255), static_cast<uint8_t>(v & 255)},
                   counts[i].item<int64_t>()});
  }
  return out;
}

torch::Tensor two_colour_fraction(const torch::Tensor& images, int64_t tolerance) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3 && images.scalar_type() == torch::kUInt8,
              "two_colour_fraction: expected uint8 [N, 3, H, W] images");
  auto px = images.to(torch::kFloat32).flatten(2).transpose(1, 2);  // [N, P, 3]
  auto dist = [&](const torch::Tensor& c) { return (px - c.unsqueeze(1)).abs().amax(2); };  // [N, P], max channel
  // Start from the per-channel median (the background holds most pixels) and the pixel farthest from it.
  auto a = std::get<0>(px.median(1));
  auto far = dist(a).argmax(1);
  auto b = px.gather(1, far.view({-1, 1, 1}).expand({-1, 1, 3})).squeeze(1);
  for (int it = 0; it < 10; ++it) {
    auto in_b = (dist(b) < dist(a)).unsqueeze(2).to(px.dtype());  // [N, P, 1]
    auto nb = in_b.sum(1), na = px.size(1) - nb;
    // A cluster that empties keeps its centre.
    a = torch::where(na > 0, (px * (1 - in_b)).sum(1) / na.clamp_min(1), a);
    b = torch::where(nb > 0, (px * in_b).sum(1) / nb.clamp_min(1), b);
  }
  return (torch::minimum(dist(a), dist(b)) <= static_cast<double>(tolerance)).to(torch::kFloat32).mean(1);
}

}  // namespace fm
