#pragma once
// `fm eval-nll`: the exact likelihood of held-out data under a trained flow (noise at t=0, data at t=1), integrating
// each batch from t=1 back to t=0 with dopri5. Images report bits/dim of the 8-bit data (uniform dequantisation,
// optionally the importance-weighted bound over K draws); 2-D toys report the negative log-likelihood in nats.
#include <string>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "config/choices.h"
#include "dist/world.h"

namespace fm {

struct EvalNllOptions {
  std::string checkpoint;
  std::string data;               // a data spec: cifar10:DIR, toy:NAME, ... ("" = the checkpoint's training data)
  Split split = Split::test;
  int64_t limit = 0;              // images: N evenly spread over the set (0 = all); toys: points drawn (0 = 1000)
  int64_t batch = 256;
  Divergence divergence = Divergence::hutchinson;
  Probe probe = Probe::rademacher;
  int64_t dequant_samples = 1;            // K: importance-weighted bound over K dequantisation draws (images)
  double atol = 1e-5, rtol = 1e-5;
  uint64_t seed = 0;              // dequantisation noise, probes and toy points; item i's draws do not depend on --batch
  Weights weights = Weights::ema;
  std::string device = "auto";
  std::string out;                // JSON results ("" = none)
  std::string per_image;          // per-item values: .npy (float64 [N]) or, for any other name, text, one per line
};

struct EvalNllSummary {
  std::string metric;      // bits_per_dim (images) | nll_nats (toys)
  int64_t n = 0;
  double mean = 0, stderr_mean = 0;  // mean over items and its standard error std / sqrt(n)
  double mean_nfe = 0;     // ODE function evaluations per solve
  double wall_s = 0;
  torch::Tensor per_item;  // [N] float64: bits/dim per image or NLL (nats) per point
  nlohmann::json json;     // everything above but per_item, plus the settings, as written to --out
};

// Over the ranks of `world` (nullptr: this process alone) each rank integrates its share of the batches and every
// rank returns what one process computes; rank 0 alone writes --out and --per-image.
EvalNllSummary run_eval_nll(const EvalNllOptions& o, dist::World* world = nullptr);

}  // namespace fm
