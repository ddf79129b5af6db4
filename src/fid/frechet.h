#pragma once
// The Frechet distance between two Gaussians, as FID uses it:
//   d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr sqrtm(S1 S2).
// pytorch-fid takes scipy's sqrtm of the non-symmetric product S1 S2. fm uses the similar symmetric form instead:
// S1 S2 = R1 (R1 S2 R1) R1^-1 with R_i = sqrtm(S_i), so tr sqrtm(S1 S2) = tr sqrtm(R1 S2 R1) = the sum of the singular
// values of R2 R1 (R1 S2 R1 = (R2 R1)^T (R2 R1)). Taking singular values of R2 R1 rather than square roots of the
// eigenvalues of R1 S2 R1 keeps the small ones to full precision: with fewer images than dimensions most are zero,
// and their squares' rounding (~1e-16 |S|^2) would otherwise add ~1e-8 |S| each. Everything is float64.
#include <torch/torch.h>

#include "fid/fid_stats.h"

namespace fm {

struct FrechetResult {
  double distance = 0;     // clamped at 0: identical sets give 0, not the -1e-13 of rounding
  bool eps_added = false;  // the computation was repeated with eps * I added to both covariances
};

// Inputs are checked with check_fid_stats. Like pytorch-fid's calculate_frechet_distance:
//  - if a decomposition fails or the result is not finite, eps * I is added to both covariances and it is retried
//    (a warning is logged); with the symmetric form a singular product needs no offset, so this is rare;
//  - pytorch-fid raises when sqrtm(S1 S2) has a diagonal imaginary part above 1e-3. In the symmetric form the only
//    complex square roots are those of the inputs: a covariance with negative eigenvalues lambda_j (eigenvectors v_j)
//    has sqrtm with imaginary diagonal sum_j sqrt(-lambda_j) v_j^2; fm raises InputError when that exceeds 1e-3 for
//    either covariance, and otherwise clamps the negative eigenvalues (rounding) to zero.
FrechetResult frechet_distance(const FidStats& a, const FidStats& b, double eps = 1e-6);

}  // namespace fm
