#pragma once
// A process group of threads, for testing code that splits work over ranks without launching processes: each thread
// holds a ThreadWorld of its rank, and the collectives meet through shared slots. Sums run in rank order on every
// rank, so all ranks see the same bits, as with a real all-reduce of a fixed order. A rank that does not arrive within
// a minute (a rank that threw) fails the others instead of hanging the suite.
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "dist/world.h"

namespace fm::test {

class ThreadGroup {
 public:
  explicit ThreadGroup(int size) : size_(size), slots_(size) {}
  int size() const { return size_; }
  std::vector<torch::Tensor>& slots() { return slots_; }
  void sync() {
    std::unique_lock<std::mutex> lock(m_);
    const int64_t gen = gen_;
    if (++arrived_ == size_) {
      arrived_ = 0;
      ++gen_;
      cv_.notify_all();
      return;
    }
    if (!cv_.wait_for(lock, std::chrono::seconds(60), [&] { return gen_ != gen; }))
      throw std::runtime_error("ThreadGroup: a rank did not reach the collective");
  }

 private:
  int size_;
  std::vector<torch::Tensor> slots_;
  std::mutex m_;
  std::condition_variable cv_;
  int arrived_ = 0;
  int64_t gen_ = 0;
};

class ThreadWorld final : public dist::World {
 public:
  ThreadWorld(ThreadGroup& g, int rank) : g_(g), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return g_.size(); }
  int local_rank() const override { return rank_; }
  void all_reduce_sum(std::vector<torch::Tensor>& tensors) override {
    for (auto& t : tensors) {
      auto sum = exchange(t, [](std::vector<torch::Tensor>& s) {
        auto acc = s[0].clone();
        for (size_t r = 1; r < s.size(); ++r) acc += s[r];
        return acc;
      });
      t.copy_(sum);
    }
  }
  void broadcast(std::vector<torch::Tensor>& tensors, int root) override {
    for (auto& t : tensors) t.copy_(exchange(t, [root](std::vector<torch::Tensor>& s) { return s[root].clone(); }));
  }
  torch::Tensor all_gather_cat(const torch::Tensor& t) override {
    return exchange(t, [](std::vector<torch::Tensor>& s) { return torch::cat(s); });
  }
  void barrier() override { g_.sync(); }
  bool any(bool flag) override {
    return exchange(torch::tensor(flag), [](std::vector<torch::Tensor>& s) { return torch::stack(s).any(); })
        .item<bool>();
  }

 private:
  torch::Tensor exchange(const torch::Tensor& mine, const std::function<torch::Tensor(std::vector<torch::Tensor>&)>& f) {
    g_.slots()[rank_] = mine;
    g_.sync();
    auto out = f(g_.slots());
    g_.sync();
    return out;
  }
  ThreadGroup& g_;
  int rank_;
};

// Runs body(world) on `size` threads, one rank each; rethrows the first rank's exception (if any rank threw).
inline void run_ranks(int size, const std::function<void(dist::World&)>& body) {
  ThreadGroup group(size);
  std::vector<std::exception_ptr> errors(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r)
    threads.emplace_back([&, r] {
      ThreadWorld w(group, r);
      try {
        body(w);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace fm::test
