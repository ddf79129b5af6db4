// The AVX2 kernels of group_norm_kernel.h. This file alone is compiled with -mavx2 -mfma (see CMakeLists.txt) and is
// called only after a run-time check of the CPU. It uses ATen's vector types (their own namespace per instruction set)
// and plain loops, not the standard library's templates: an inline function instantiated here would carry AVX2 code,
// and the linker could pick that copy for callers elsewhere that run on any CPU.
//
// Numerics: per-channel sums are taken relative to the sample's first row (so that a large mean does not cancel the
// variance away), in float over blocks of rows and in double across blocks, and channels are combined into groups
// with the parallel-variance formula in double.
#include "kernels/group_norm_kernel.h"

#include <ATen/cpu/vec/vec.h>

#include <cmath>

namespace fm::kernels {
namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kBlockRows = 128;  // rows summed in float before the sums move to double

void zero(int64_t n, float* v) {
  for (int64_t i = 0; i < n; ++i) v[i] = 0.f;
}
void zero(int64_t n, double* v) {
  for (int64_t i = 0; i < n; ++i) v[i] = 0.0;
}

// Adds the float partial sums into the double ones and clears them.
void flush(int64_t n, float* partial, double* total) {
  for (int64_t c = 0; c < n; ++c) {
    total[c] += partial[c];
    partial[c] = 0.f;
  }
}

Vec sigmoid(const Vec& v) { return Vec(1.f) / (Vec(1.f) + v.neg().exp()); }

// a = rstd * gamma and b = beta + (shift - mean) * a per channel, so that the normalised output is x * a + b.
void affine(const GroupNormShape& s, const float* gamma, const float* beta, const float* shift, const float* mean,
            const float* rstd, float* a, float* b) {
  const int64_t per_group = s.channels / s.groups;
  for (int64_t c = 0; c < s.channels; ++c) {
    const double r = rstd[c / per_group], m = mean[c / per_group];
    const double e = shift ? shift[c] : 0.0;
    a[c] = static_cast<float>(r * gamma[c]);
    b[c] = static_cast<float>(beta[c] + (e - m) * r * gamma[c]);
  }
}

}  // namespace

void group_norm_forward_avx2(const GroupNormShape& s, const float* x, const float* gamma, const float* beta,
                             const float* shift, float* y, float* mean, float* rstd, float* fscratch,
                             double* dscratch) {
  const int64_t C = s.channels, HW = s.hw, D = C / s.groups, L = Vec::size();
  float* fsum = fscratch;
  float* fsq = fscratch + C;
  float* a = fscratch + 2 * C;
  float* b = fscratch + 3 * C;
  double* sum = dscratch;
  double* sq = dscratch + C;
  zero(2 * C, fscratch);
  zero(2 * C, dscratch);

  for (int64_t r = 0; r < HW; ++r) {
    const float* row = x + r * C;
    for (int64_t c = 0; c < C; c += L) {
      const Vec v = Vec::loadu(row + c) - Vec::loadu(x + c);
      (Vec::loadu(fsum + c) + v).store(fsum + c);
      at::vec::fmadd(v, v, Vec::loadu(fsq + c)).store(fsq + c);
    }
    if ((r + 1) % kBlockRows == 0 || r + 1 == HW) {
      flush(C, fsum, sum);
      flush(C, fsq, sq);
    }
  }

  for (int64_t g = 0; g < s.groups; ++g) {
    double group_mean = 0, m2 = 0;
    for (int64_t c = g * D; c < (g + 1) * D; ++c) {
      group_mean += x[c] + (shift ? shift[c] : 0.0) + sum[c] / HW;
      m2 += sq[c] - sum[c] * sum[c] / HW;
    }
    group_mean /= D;
    for (int64_t c = g * D; c < (g + 1) * D; ++c) {
      const double d = x[c] + (shift ? shift[c] : 0.0) + sum[c] / HW - group_mean;
      m2 += HW * d * d;
    }
    const double var = m2 > 0 ? m2 / static_cast<double>(HW * D) : 0.0;
    mean[g] = static_cast<float>(group_mean);
    rstd[g] = static_cast<float>(1.0 / std::sqrt(var + s.eps));
  }
  affine(s, gamma, beta, shift, mean, rstd, a, b);

  for (int64_t r = 0; r < HW; ++r) {
    const float* in = x + r * C;
    float* out = y + r * C;
    for (int64_t c = 0; c < C; c += L) {
      Vec v = at::vec::fmadd(Vec::loadu(in + c), Vec::loadu(a + c), Vec::loadu(b + c));
      if (s.silu) v = v * sigmoid(v);
      v.store(out + c);
    }
  }
}

void group_norm_backward_avx2(const GroupNormShape& s, const float* dy, const float* x, const float* gamma,
                              const float* beta, const float* shift, const float* mean, const float* rstd, float* dx,
                              float* dgamma, float* dbeta, float* dshift, float* fscratch, double* dscratch) {
  const int64_t C = s.channels, HW = s.hw, D = C / s.groups, L = Vec::size();
  float* a = fscratch;
  float* b = fscratch + C;
  float* fsum_g = fscratch + 2 * C;   // sum of g, the gradient at the normalised output
  float* fsum_gx = fscratch + 3 * C;  // sum of g * (x - x[0])
  float* fsum_dx = fscratch + 4 * C;
  float* p = fscratch + 5 * C;
  float* q = fscratch + 6 * C;
  float* k = fscratch + 7 * C;
  double* sum_g = dscratch;
  double* sum_gx = dscratch + C;
  double* sum_dx = dscratch + 2 * C;
  zero(3 * C, fsum_g);
  zero(3 * C, dscratch);
  affine(s, gamma, beta, shift, mean, rstd, a, b);

  // Pass 1: g = dy * silu'(y) into dx, with its per-channel sums.
  const Vec one(1.f);
  for (int64_t r = 0; r < HW; ++r) {
    const float* in = x + r * C;
    const float* grad = dy + r * C;
    float* out = dx + r * C;
    for (int64_t c = 0; c < C; c += L) {
      const Vec xv = Vec::loadu(in + c);
      Vec g = Vec::loadu(grad + c);
      if (s.silu) {
        const Vec y = at::vec::fmadd(xv, Vec::loadu(a + c), Vec::loadu(b + c));
        const Vec sg = sigmoid(y);
        g = g * sg * at::vec::fmadd(y, one - sg, one);
      }
      g.store(out + c);
      (Vec::loadu(fsum_g + c) + g).store(fsum_g + c);
      at::vec::fmadd(g, xv - Vec::loadu(x + c), Vec::loadu(fsum_gx + c)).store(fsum_gx + c);
    }
    if ((r + 1) % kBlockRows == 0 || r + 1 == HW) {
      flush(C, fsum_g, sum_g);
      flush(C, fsum_gx, sum_gx);
    }
  }

  // dx = rstd * (g * gamma - mean(g * gamma) - xhat * mean(g * gamma * xhat)) over the group, written as
  // g * p + x * q + k per channel.
  for (int64_t grp = 0; grp < s.groups; ++grp) {
    const double mu = mean[grp], rs = rstd[grp];
    double m1 = 0, m2 = 0;
    for (int64_t c = grp * D; c < (grp + 1) * D; ++c) {
      const double e = shift ? shift[c] : 0.0;
      const double sum_g_xhat = rs * (sum_gx[c] + (x[c] + e - mu) * sum_g[c]);
      dgamma[c] = static_cast<float>(sum_g_xhat);
      dbeta[c] = static_cast<float>(sum_g[c]);
      m1 += gamma[c] * sum_g[c];
      m2 += gamma[c] * sum_g_xhat;
    }
    m1 /= static_cast<double>(HW * D);
    m2 /= static_cast<double>(HW * D);
    const double qg = -rs * rs * m2;
    for (int64_t c = grp * D; c < (grp + 1) * D; ++c) {
      const double e = shift ? shift[c] : 0.0;
      p[c] = static_cast<float>(rs * gamma[c]);
      q[c] = static_cast<float>(qg);
      k[c] = static_cast<float>(-rs * m1 + qg * (e - mu));
    }
  }

  // Pass 2: dx from g in place.
  for (int64_t r = 0; r < HW; ++r) {
    const float* in = x + r * C;
    float* out = dx + r * C;
    for (int64_t c = 0; c < C; c += L) {
      const Vec v = at::vec::fmadd(Vec::loadu(out + c), Vec::loadu(p + c),
                                   at::vec::fmadd(Vec::loadu(in + c), Vec::loadu(q + c), Vec::loadu(k + c)));
      v.store(out + c);
      if (dshift) (Vec::loadu(fsum_dx + c) + v).store(fsum_dx + c);
    }
    if (dshift && ((r + 1) % kBlockRows == 0 || r + 1 == HW)) flush(C, fsum_dx, sum_dx);
  }
  if (dshift)
    for (int64_t c = 0; c < C; ++c) dshift[c] = static_cast<float>(sum_dx[c]);
}

}  // namespace fm::kernels
