#pragma once
// How close 2-D samples are to a toy distribution: the sliced Wasserstein-2 distance to as many points drawn afresh
// from it (sample/sliced_wasserstein.h, 512 directions), and for the checkerboard the fraction of samples on its
// filled squares (data/toy2d.h's on_checkerboard; the data itself scores 1).
#include <cstdint>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "config/choices.h"

namespace fm {

// samples: [n, 2]. The reference points and the directions come from `seed` alone, so that two models sampled with
// the same seed are measured against the same points. Returns {"reference", "n_reference", "sliced_wasserstein",
// "directions", and for the checkerboard "on_checkerboard"}.
nlohmann::json toy_metrics(const torch::Tensor& samples, ToyData toy, int64_t n_reference, uint64_t seed);

}  // namespace fm
