#pragma once
// `fm bench`: times fm's own training step, samplers and likelihood on one device after a warm-up, the figures that
// scripts/bench.sh sets beside the same work done by PyTorch (scripts/bench_ref.py). Synthetic data (uniform uint8
// images held on the device, drawn by the training sampler with flips): the content of the images does not change the
// work of a step.
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "config/config.h"

namespace fm {

// What fm bench measures: a training step; the step with the parts outside the network timed alone; a fixed-step
// Euler solve; a dopri5 solve; the likelihood of eval-nll.
enum class BenchWhat { train, profile, euler, dopri5, nll };
template <>
struct ChoiceNames<BenchWhat> {
  static constexpr std::pair<BenchWhat, const char*> table[] = {{BenchWhat::train, "train"},
                                                                {BenchWhat::profile, "profile"},
                                                                {BenchWhat::euler, "euler"},
                                                                {BenchWhat::dopri5, "dopri5"},
                                                                {BenchWhat::nll, "nll"}};
};

struct BenchOptions {
  std::vector<BenchWhat> what = {BenchWhat::train};
  std::vector<int64_t> shape;  // one sample ({C, H, W} or {2}); empty: the config's data (sample_shape_of)
  int64_t batch = 0;                          // training batch; 0: train.batch_size
  int64_t warmup = 5, steps = 20;             // training steps untimed, then timed
  int64_t sample_batch = 64, nll_batch = 16;  // images per solve
  int64_t euler_steps = 100;
  double tol = 1e-5;                // dopri5 atol = rtol, sampling and likelihood
  std::string weights;              // a torchcfm state_dict as .npz (scripts/bench_ref.py writes it); "" = fresh init
  double peak_tflops = 0.0;         // the device's stated peak, for MFU; 0 leaves MFU out
  uint64_t seed = 0;
};

// One JSON object per measurement (what, device, batch, ms_per_step or s_per_1000, images_per_s, nfe, peak memory,
// FLOPs and MFU for training), in the order of `what`.
// `inputs_file`: an .npz with x0 (noise to sample from), x1 (images for the likelihood) and probe (Hutchinson's), as
// scripts/bench_ref.py writes it, so both sides integrate the same problems; "" draws them here.
std::vector<nlohmann::json> run_bench(const Config& cfg, const BenchOptions& opts,
                                      const std::function<void(const nlohmann::json&)>& on_result = nullptr,
                                      const std::string& inputs_file = "");

}  // namespace fm
