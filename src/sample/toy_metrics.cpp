#include "sample/toy_metrics.h"

#include <mutex>

#include <ATen/CPUGeneratorImpl.h>

#include "data/toy2d.h"
#include "sample/sliced_wasserstein.h"

namespace fm {

namespace {

constexpr int64_t kDirections = 512;

// n points of `toy` from the CPU default generator seeded for this purpose, its earlier state restored after.
torch::Tensor reference_points(ToyData toy, int64_t n, uint64_t seed) {
  auto gen = at::detail::getDefaultCPUGenerator();
  at::Tensor saved;
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    saved = gen.get_state();
    gen.set_current_seed(seed * 0x9E3779B97F4A7C15ull + 0x70C0ull);
  }
  auto points = sample_toy(toy, n, torch::TensorOptions().device(torch::kCPU));
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(saved);
  }
  return points;
}

}  // namespace

nlohmann::json toy_metrics(const torch::Tensor& samples, ToyData toy, int64_t n_reference, uint64_t seed) {
  const auto x = samples.to(torch::kCPU, torch::kFloat32);
  const auto ref = reference_points(toy, n_reference, seed);
  nlohmann::json j;
  j["reference"] = std::string("toy:") + name_of(toy);
  j["n_reference"] = n_reference;
  j["directions"] = kDirections;
  j["sliced_wasserstein"] = sliced_wasserstein(x, ref, random_directions(2, kDirections, seed + 1));
  if (toy == ToyData::checkerboard) j["on_checkerboard"] = on_checkerboard(x).to(torch::kFloat64).mean().item<double>();
  return j;
}

}  // namespace fm
