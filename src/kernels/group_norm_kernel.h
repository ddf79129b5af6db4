#pragma once
// The per-sample kernels behind group_norm_silu on the CPU, for channels-last float32 activations: one sample is
// a [HW, C] row-major block, group g holds channels [g*C/G, (g+1)*C/G). Kept free of LibTorch's API so that the file
// that defines them can be compiled for AVX2 on its own; group_norm_silu.cpp loops over the batch and dispatches.
#include <cstdint>

namespace fm::kernels {

struct GroupNormShape {
  int64_t hw = 0, channels = 0, groups = 0;
  double eps = 1e-5;
  bool silu = false;
};

// y = silu(GroupNorm(x + shift) * gamma + beta) for one sample (silu when shape.silu); shift is [C] or null.
// Writes the group statistics mean[G] and rstd[G]. Scratch: kForwardScratch floats and doubles per channel.
constexpr int64_t kForwardScratch = 4;
void group_norm_forward_avx2(const GroupNormShape& shape, const float* x, const float* gamma, const float* beta,
                             const float* shift, float* y, float* mean, float* rstd, float* fscratch,
                             double* dscratch);

// The gradients for one sample from dy (the gradient of the output): dx, and this sample's share of dgamma and dbeta
// (each [C]); dshift [C] when shift is not null. Scratch: kBackwardScratch floats and doubles per channel.
constexpr int64_t kBackwardScratch = 8;
void group_norm_backward_avx2(const GroupNormShape& shape, const float* dy, const float* x, const float* gamma,
                              const float* beta, const float* shift, const float* mean, const float* rstd, float* dx,
                              float* dgamma, float* dbeta, float* dshift, float* fscratch, double* dscratch);

}  // namespace fm::kernels
