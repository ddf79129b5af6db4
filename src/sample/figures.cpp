#include "sample/figures.h"

#include <cmath>

#include "data/toy2d.h"
#include "io/image.h"

namespace fm {

torch::Tensor write_toy_figures(VelocityField& model, const torch::Tensor& data, const SolveSettings& s, int64_t n,
                                const std::string& dir, const torch::Device& device) {
  auto opts = torch::TensorOptions().device(device);
  auto x0 = torch::randn({n, 2}, opts);
  const int64_t shown = std::min<int64_t>(n, 200);
  std::vector<torch::Tensor> traj{x0.narrow(0, 0, shown).cpu()};
  auto r = generate(model, x0, {}, s, 0.0, [&](double, const torch::Tensor& x) { traj.push_back(x.narrow(0, 0, shown).cpu()); });
  write_png(dir + "/samples.png", scatter_panels({data.to(r.x.device()), r.x}, kToyPlotLimit));
  write_png(dir + "/trajectories.png", trajectory_plot(torch::stack(traj), kToyPlotLimit));
  return r.x;
}

int64_t grid_columns(int64_t n, int64_t cycled_classes) {
  const double root = std::sqrt(static_cast<double>(std::max<int64_t>(n, 1)));
  if (cycled_classes <= 0) return static_cast<int64_t>(std::ceil(root - 1e-9));
  const int64_t k = cycled_classes;
  return k * std::max<int64_t>(1, std::llround(root / static_cast<double>(k)));
}

void write_image_grid(const std::string& path, const torch::Tensor& images, int64_t cycled_classes) {
  auto u8 = to_uint8(images).permute({0, 2, 3, 1});
  write_png(path, make_grid(u8, grid_columns(images.size(0), cycled_classes)));
}

}  // namespace fm
