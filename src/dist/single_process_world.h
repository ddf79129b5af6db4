#pragma once
// A world of one process, where each collective leaves its input as it is: the world of a process no launcher
// started, and of work a caller does whole in each process.
#include "dist/world.h"

namespace fm::dist {

class SingleProcessWorld final : public World {
 public:
  explicit SingleProcessWorld(int local_rank = 0) : local_rank_(local_rank) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return local_rank_; }
  void all_reduce_sum(std::vector<torch::Tensor>&) override {}
  void broadcast(std::vector<torch::Tensor>&, int) override {}
  torch::Tensor all_gather_cat(const torch::Tensor& t) override { return t; }
  void barrier() override {}
  bool any(bool flag) override { return flag; }
  void set_local_rank(int local_rank) { local_rank_ = local_rank; }

 private:
  int local_rank_;
};

}  // namespace fm::dist
