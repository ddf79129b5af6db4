#include "train/adamw.h"

#include <stdexcept>
#include <string>

namespace fm {

AdamW::AdamW(std::vector<torch::Tensor> params, AdamWOptions opts) : params_(std::move(params)), opts_(opts) {
  torch::NoGradGuard ng;
  for (const auto& p : params_) {
    TORCH_CHECK(p.is_floating_point(), "AdamW: parameters must be floating point");
    exp_avg_.push_back(torch::zeros_like(p, at::MemoryFormat::Preserve));
    exp_avg_sq_.push_back(torch::zeros_like(p, at::MemoryFormat::Preserve));
    // float32 on the parameter's device, as torch.optim's fused path keeps them: the kernel reads them there.
    steps_.push_back(torch::zeros({}, p.options().dtype(torch::kFloat32)));
  }
  // A tensor learning rate only pays off on an accelerator; the CPU kernel reads a tensor lr back anyway, so there
  // (as in torch/optim/adam.py) the double overload is used.
  if (!params_.empty() && !params_[0].is_cpu()) lr_ = torch::zeros({}, params_[0].options().dtype(torch::kFloat32));
}

void AdamW::set_lr(double lr) {
  lr_host_ = lr;
  if (lr_.defined()) lr_.fill_(lr);
}

void AdamW::step(double lr, const torch::Tensor& found_inf) {
  set_lr(lr);
  step(found_inf);
}

void AdamW::step(const torch::Tensor& found_inf) {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> p, g, m, v, s;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i].grad().defined()) continue;  // a parameter this loss did not reach keeps its state
    p.push_back(params_[i]);
    g.push_back(params_[i].grad());
    m.push_back(exp_avg_[i]);
    v.push_back(exp_avg_sq_[i]);
    s.push_back(steps_[i]);
  }
  if (p.empty()) return;
  std::optional<torch::Tensor> inf;
  if (found_inf.defined()) inf = found_inf;
  // The kernel's bias correction reads the incremented count; a skipped step gives the increment back below.
  at::_foreach_add_(s, 1);
  const auto& o = opts_;
  if (lr_.defined())
    at::_fused_adamw_(p, g, m, v, {}, s, lr_, o.beta1, o.beta2, o.weight_decay, o.eps, false, false, std::nullopt, inf);
  else
    at::_fused_adamw_(p, g, m, v, {}, s, lr_host_, o.beta1, o.beta2, o.weight_decay, o.eps, false, false, std::nullopt,
                      inf);
  if (inf) at::_foreach_sub_(s, std::vector<torch::Tensor>(s.size(), *inf));
}

void AdamW::zero_grad() {
  for (auto& p : params_)
    if (p.grad().defined()) p.mutable_grad().reset();
}

int64_t AdamW::updates() const { return steps_.empty() ? 0 : static_cast<int64_t>(steps_[0].item<float>()); }

void AdamW::save(torch::serialize::OutputArchive& ar) const {
  ar.write("adamw_params", torch::tensor(static_cast<int64_t>(params_.size())));
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto n = std::to_string(i);
    ar.write("step_" + n, steps_[i]);
    ar.write("exp_avg_" + n, exp_avg_[i]);
    ar.write("exp_avg_sq_" + n, exp_avg_sq_[i]);
  }
}

void AdamW::load(torch::serialize::InputArchive& ar) {
  torch::Tensor count;
  if (!ar.try_read("adamw_params", count))
    throw std::runtime_error("the optimizer state is not fm's fused AdamW (written by an older fm?)");
  if (count.item<int64_t>() != static_cast<int64_t>(params_.size()))
    throw std::runtime_error("the optimizer state holds " + std::to_string(count.item<int64_t>()) +
                             " parameters, the model " + std::to_string(params_.size()));
  torch::NoGradGuard ng;
  auto read_into = [&](const std::string& key, torch::Tensor& dst) {
    torch::Tensor t;
    if (!ar.try_read(key, t)) throw std::runtime_error("the optimizer state has no " + key);
    if (t.sizes() != dst.sizes() || t.scalar_type() != dst.scalar_type())
      throw std::runtime_error("the optimizer state's " + key + " does not match its parameter");
    dst.copy_(t);  // keeps the device and memory format chosen at construction
  };
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto n = std::to_string(i);
    read_into("step_" + n, steps_[i]);
    read_into("exp_avg_" + n, exp_avg_[i]);
    read_into("exp_avg_sq_" + n, exp_avg_sq_[i]);
  }
}

}  // namespace fm
