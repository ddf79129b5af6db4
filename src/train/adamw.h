#pragma once
// AdamW (Loshchilov & Hutter 2019, decoupled weight decay) on LibTorch's fused kernel at::_fused_adamw_, which has CPU
// and CUDA implementations: one call updates every parameter, moment and step count of a device. It is fused for two
// reasons beyond speed: the learning rate can live in a device tensor (changing it every step needs no host sync), and
// the kernel takes a device flag `found_inf` and leaves everything untouched where it is 1, which is what lets the
// non-finite guard skip a step without reading anything back to the host (the scheme of PyTorch's GradScaler and of
// torch/optim/adam.py's fused path, which this follows: step counts are incremented before the kernel and the flag is
// subtracted after it).
#include <vector>

#include <torch/torch.h>

#include "checkpoint/checkpoint.h"

namespace fm {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2;
};

class AdamW : public ArchiveState {
 public:
  // The moments and step counts are created at once (zeros, beside each parameter, in its memory format).
  AdamW(std::vector<torch::Tensor> params, AdamWOptions opts);

  // p <- p (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps) for every parameter that has a gradient. found_inf, if given,
  // is a float32 scalar on the parameters' device: where it is 1 the whole step is skipped on the device (parameters,
  // moments and step counts unchanged); where it is 0 the step is taken.
  void step(double lr, const torch::Tensor& found_inf = {});
  // The same with the learning rate of the last set_lr(). A CUDA graph captures this one: the fill of the device lr
  // happens outside the graph (set_lr before each replay), so the captured kernels read whatever lr it holds.
  void step(const torch::Tensor& found_inf);
  void set_lr(double lr);
  // Drops the gradients (set to undefined, as torch's zero_grad(set_to_none=true)).
  void zero_grad();

  // Updates applied to the first parameter so far (a host read; for logs and tests).
  int64_t updates() const;
  const std::vector<torch::Tensor>& exp_avg() const { return exp_avg_; }
  const std::vector<torch::Tensor>& exp_avg_sq() const { return exp_avg_sq_; }
  const std::vector<torch::Tensor>& step_counts() const { return steps_; }

  // Archive form: adamw_params (the count), and step_<i>, exp_avg_<i>, exp_avg_sq_<i> per parameter.
  void save(torch::serialize::OutputArchive& ar) const override;
  // Throws std::runtime_error saying what is missing or mis-shaped.
  void load(torch::serialize::InputArchive& ar) override;

 private:
  std::vector<torch::Tensor> params_, exp_avg_, exp_avg_sq_, steps_;
  AdamWOptions opts_;
  torch::Tensor lr_;  // on CUDA: the learning rate as a device scalar, filled each step without a sync
  double lr_host_ = 0.0;
};

}  // namespace fm
