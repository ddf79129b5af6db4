#pragma once
// The power-function EMA of Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models"
// (EDM2, section 3.1 and appendix C.2), as pure functions of numbers. Time t counts optimisation steps (t = 1 after
// the first step). A profile of exponent gamma at time t averages the weights of the times tau in [0, t] with the
// density p_t(tau) = (gamma + 1) tau^gamma / t^(gamma + 1); its length is sigma_rel, the standard deviation of that
// density over t, which does not depend on t. Post-hoc EMA keeps such profiles of a few lengths during training, saves
// them now and then, and afterwards combines the saved ones into a profile of any other length by least squares.
#include <vector>

namespace fm::phema {

// sigma_rel of gamma = 0, the plain running mean: sqrt(1/12). Every length in (0, kMaxSigmaRel] has one gamma >= 0.
constexpr double kMaxSigmaRel = 0.28867513459481287;

// EDM2 eq. 123: sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3))).
double gamma_to_sigma_rel(double gamma);
// The inverse on gamma >= 0 (EDM2 eq. 126): the largest real root of
// gamma^3 + 7 gamma^2 + (16 - sigma_rel^-2) gamma + 12 - sigma_rel^-2. sigma_rel must be in (0, kMaxSigmaRel]
// (std::invalid_argument otherwise).
double sigma_rel_to_gamma(double sigma_rel);

// The decay that tracks a profile step by step (EDM2 eq. 127, t_delta one step): after step t (1-based),
// average <- beta average + (1 - beta) weights with beta = (1 - 1/t)^(gamma + 1). beta is 0 at t = 1, so the average
// starts at the first step's weights; the step-tau weights then carry (1 - beta_tau) prod_{s > tau} beta_s, about
// p_t(tau).
double power_ema_beta(double gamma, double t);

// A profile: time t (in steps, > 0) and exponent gamma (> -1/2, so that its square is integrable).
struct Profile {
  double t = 0.0;
  double gamma = 0.0;
};

// The inner product <p_a, p_b> = integral over tau of p_a(tau) p_b(tau) (EDM2 eq. 151): with a the profile that ends
// first (t_a <= t_b), (gamma_a + 1)(gamma_b + 1) / ((gamma_a + gamma_b + 1) t_b) * (t_a / t_b)^gamma_b.
double profile_dot(const Profile& a, const Profile& b);

// The coefficients x of the inputs whose combination sum_i x_i p_i is the least-squares fit of `target` over tau
// (EDM2 algorithm 3): the normal equations A x = b with A_ij = <p_i, p_j> and b_i = <p_i, target>, solved in double
// precision, then rescaled to sum to 1 so that the combination is an average. A target equal to an input gives that
// input alone. Throws std::invalid_argument when there are no inputs or A is singular (an input given twice).
std::vector<double> solve_posthoc_coefficients(const std::vector<Profile>& inputs, const Profile& target);

}  // namespace fm::phema
