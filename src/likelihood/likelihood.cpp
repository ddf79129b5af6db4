#include "likelihood/likelihood.h"

#include <cmath>

#include "solver/ode.h"
#include "util/error.h"

namespace fm {

torch::Tensor divergence(const VelocityFn& v, const torch::Tensor& t, const torch::Tensor& x,
                         Divergence method, const torch::Tensor& probe, torch::Tensor* v_out) {
  // The caller (an ODE solve) usually runs without gradients; the divergence needs a graph from x to v.
  torch::AutoGradMode grad_on(true);
  const int64_t b = x.size(0);
  auto xg = x.detach().requires_grad_(true);
  auto out = v(t, xg);
  if (v_out) *v_out = out.detach();
  // A field that ignores x (the zero field, say) has no graph back to it: its divergence is 0.
  if (!out.requires_grad()) return torch::zeros({b}, x.options());

  if (method == Divergence::hutchinson) {
    if (!probe.defined() || probe.sizes() != x.sizes())
      throw std::invalid_argument("divergence: Hutchinson needs a probe shaped like x");
    auto e = probe.to(x.options());
    // One vector-Jacobian product e^T (dv/dx); no graph of the gradient itself is kept (create_graph false).
    auto g = torch::autograd::grad({out}, {xg}, {e}, /*retain_graph=*/false, /*create_graph=*/false,
                                   /*allow_unused=*/true)[0];
    if (!g.defined()) return torch::zeros({b}, x.options());
    return (g * e).reshape({b, -1}).sum(1).detach();
  }

  // Exact: one backward pass per output dimension i gives row i of the Jacobian (per sample, since samples do not
  // interact); keep its diagonal entry.
  auto flat = out.reshape({b, -1});
  const int64_t d = flat.size(1);
  auto div = torch::zeros({b}, x.options());
  for (int64_t i = 0; i < d; ++i) {
    auto g = torch::autograd::grad({flat.select(1, i).sum()}, {xg}, {}, /*retain_graph=*/i + 1 < d,
                                   /*create_graph=*/false, /*allow_unused=*/true)[0];
    if (g.defined()) div = div + g.reshape({b, -1}).select(1, i);
  }
  return div.detach();
}

LikelihoodResult log_likelihood(const VelocityFn& v, const torch::Tensor& x1, const LikelihoodOptions& opt,
                                const torch::Tensor& probe) {
  if (!x1.is_floating_point()) throw std::invalid_argument("log_likelihood: x1 must be floating point");
  if (x1.dim() < 2) throw std::invalid_argument("log_likelihood: x1 must be [B, ...]");
  const auto shape = x1.sizes().vec();
  const int64_t b = shape[0], d = x1.numel() / std::max<int64_t>(b, 1);
  torch::Tensor e;
  if (opt.divergence == Divergence::hutchinson) {
    if (!probe.defined() || probe.sizes() != x1.sizes())
      throw std::invalid_argument("log_likelihood: Hutchinson needs a probe shaped like x1");
    e = probe.to(x1.options());
  }

  // The solvers integrate one tensor: the state is [x flattened, l] of shape [B, D + 1].
  auto state = torch::cat({x1.reshape({b, d}), torch::zeros({b, 1}, x1.options())}, 1);
  OdeFunc f = [&](double t, const torch::Tensor& s) {
    auto x = s.narrow(1, 0, d).reshape(shape);
    auto tt = torch::full({b}, t, s.options());
    torch::Tensor vel;
    auto div = divergence(v, tt, x, opt.divergence, e, &vel);
    return torch::cat({vel.reshape({b, d}).to(s.dtype()), div.unsqueeze(1).to(s.dtype())}, 1);
  };
  Dopri5Options o;
  o.atol = opt.atol;
  o.rtol = opt.rtol;
  // From data (t=1) back to noise (t=0); l(0) = -int_0^1 div v dt.
  auto r = solve_dopri5(f, state, 1.0, 0.0, o);

  LikelihoodResult res;
  res.x0 = r.x.narrow(1, 0, d).reshape(shape);
  res.log_p0 = standard_normal_log_prob(res.x0);
  res.log_p = res.log_p0 + r.x.select(1, d).to(torch::kFloat64);
  res.nfe = r.nfe;
  return res;
}

torch::Tensor make_probe(Probe kind, const std::vector<int64_t>& shape, at::Generator& gen) {
  switch (kind) {
    case Probe::rademacher:
      return torch::randint(0, 2, shape, gen, torch::TensorOptions().dtype(torch::kFloat32)) * 2.0 - 1.0;
    case Probe::gaussian:
      return torch::randn(shape, gen, torch::TensorOptions().dtype(torch::kFloat32));
  }
  throw std::logic_error("make_probe: unhandled probe");
}

torch::Tensor standard_normal_log_prob(const torch::Tensor& x) {
  auto flat = x.reshape({x.size(0), -1}).to(torch::kFloat64);
  const double d = static_cast<double>(flat.size(1));
  return -0.5 * flat.square().sum(1) - 0.5 * d * std::log(2.0 * M_PI);
}

torch::Tensor dequantize(const torch::Tensor& v, const torch::Tensor& uniform) {
  return (v.to(uniform.scalar_type()) + uniform) * (2.0 / 256.0) - 1.0;
}

torch::Tensor bits_per_dim(const torch::Tensor& log_p_y, int64_t dims) {
  return -log_p_y.to(torch::kFloat64) / (static_cast<double>(dims) * std::log(2.0)) + 7.0;
}

torch::Tensor logmeanexp(const torch::Tensor& a, int64_t dim) {
  return torch::logsumexp(a, dim) - std::log(static_cast<double>(a.size(dim)));
}

}  // namespace fm
