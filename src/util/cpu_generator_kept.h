#pragma once
// Keeps the CPU's default generator where it was for a scope: building a network draws its initial weights from it,
// and code that builds networks only as containers (post-hoc EMA profiles, reconstructions) must not move the stream
// a run or a command draws from.
#include <mutex>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

namespace fm {

class CpuGeneratorKept {
 public:
  CpuGeneratorKept() : gen_(at::detail::getDefaultCPUGenerator()) {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    state_ = gen_.get_state();
  }
  ~CpuGeneratorKept() {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    gen_.set_state(state_);
  }
  CpuGeneratorKept(const CpuGeneratorKept&) = delete;
  CpuGeneratorKept& operator=(const CpuGeneratorKept&) = delete;

 private:
  at::Generator gen_;
  torch::Tensor state_;
};

}  // namespace fm
