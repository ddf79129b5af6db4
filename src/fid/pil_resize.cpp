#include "fid/pil_resize.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace fm {
namespace {

// Keys' cubic convolution kernel with a = -0.5 (PIL's bicubic_filter).
double keys_bicubic(double x) {
  constexpr double a = -0.5;
  x = std::abs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
  if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
  return 0.0;
}

constexpr double kPilBicubicSupport = 2.0;

}  // namespace

torch::Tensor pil_bicubic_weights(int64_t in_size, int64_t out_size) {
  TORCH_CHECK(in_size >= 1 && out_size >= 1, "pil_bicubic_weights: sizes must be >= 1, got ", in_size, " -> ",
              out_size);
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double filterscale = std::max(scale, 1.0);
  const double support = kPilBicubicSupport * filterscale;
  const double inv_filterscale = 1.0 / filterscale;  // PIL multiplies by the reciprocal: the same last bit
  std::vector<double> w(static_cast<size_t>(out_size * in_size), 0.0);
  for (int64_t i = 0; i < out_size; ++i) {
    const double center = (static_cast<double>(i) + 0.5) * scale;
    // PIL rounds with a C cast, which truncates toward zero; the clamp at 0 makes that the same as floor.
    const int64_t lo = std::max<int64_t>(0, static_cast<int64_t>(center - support + 0.5));
    const int64_t hi = std::min<int64_t>(in_size, static_cast<int64_t>(center + support + 0.5));
    double* row = w.data() + i * in_size;
    double sum = 0.0;
    for (int64_t j = lo; j < hi; ++j) {
      row[j] = keys_bicubic((static_cast<double>(j) - center + 0.5) * inv_filterscale);
      sum += row[j];
    }
    if (sum != 0.0)
      for (int64_t j = lo; j < hi; ++j) row[j] /= sum;
  }
  return torch::from_blob(w.data(), {out_size, in_size}, torch::kFloat64).clone();
}

torch::Tensor pil_bicubic_resize(const torch::Tensor& x, int64_t out_h, int64_t out_w) {
  TORCH_CHECK(x.dim() >= 2 && x.scalar_type() == torch::kFloat32,
              "pil_bicubic_resize: expected float32 [..., H, W], got ", x.scalar_type(), " ", x.sizes());
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(x.device());
  const int64_t in_h = x.size(-2), in_w = x.size(-1);
  // Each pass is stored as float32, as PIL's intermediate image.
  auto horizontal = [&](const torch::Tensor& y) {
    if (in_w == out_w) return y;
    return torch::matmul(y.to(torch::kFloat64), pil_bicubic_weights(in_w, out_w).to(f64).t()).to(torch::kFloat32);
  };
  auto vertical = [&](const torch::Tensor& y) {
    if (in_h == out_h) return y;
    return torch::matmul(pil_bicubic_weights(in_h, out_h).to(f64), y.to(torch::kFloat64)).to(torch::kFloat32);
  };
  // Pillow 13 runs the vertical pass first when the height shrinks by more than twice what the width does (earlier
  // Pillow always went horizontal first; the order moves the last float32 bit).
  const bool vertical_first = in_h - out_h > 0 && in_h - out_h > 2 * (in_w - out_w);
  return vertical_first ? horizontal(vertical(x)) : vertical(horizontal(x));
}

}  // namespace fm
