#include "dist/grad_reducer.h"

#include <torch/csrc/distributed/c10d/Backend.hpp>

#include <mutex>

#include "dist/process_group_world.h"

namespace fm::dist {

struct GradReducer::Impl {
  struct Slot {
    size_t bucket;
    int64_t offset, numel;
  };
  struct Bucket {
    torch::Tensor flat;  // every member's gradient, back to back
    std::vector<size_t> members;
    size_t pending = 0;  // members whose gradient has not arrived this step
    bool launched = false;
    c10::intrusive_ptr<c10d::Work> work;
  };

  World& world;
  ProcessGroupWorld* pg = nullptr;  // null: one process, nothing to do
  std::vector<torch::Tensor> params;
  std::vector<unsigned> hooks;
  std::vector<Slot> slots;
  std::vector<bool> arrived;
  std::vector<Bucket> buckets;
  size_t next_launch = 0;  // buckets launch in index order only, so all ranks issue the same sequence
  bool armed = false;
  std::mutex mu;  // autograd may run hooks of different devices on different threads
  double exposed_wait_s = 0.0;
  int64_t launched_in_backward = 0;

  Impl(std::vector<torch::Tensor> p, World& w) : world(w), params(std::move(p)) {}

  void launch(Bucket& b) {
    std::vector<at::Tensor> v{b.flat};
    try {
      b.work = pg->backend().allreduce(v);
    } catch (const std::exception& e) {
      pg->fail("gradient all_reduce", e);
    }
    b.launched = true;
  }

  void launch_ready() {
    while (next_launch < buckets.size() && buckets[next_launch].pending == 0) launch(buckets[next_launch++]);
  }

  torch::Tensor slice(size_t i) {
    const auto& s = slots[i];
    return buckets[s.bucket].flat.narrow(0, s.offset, s.numel).view(params[i].sizes());
  }

  void on_grad(size_t i, const torch::Tensor& grad) {
    std::lock_guard<std::mutex> lock(mu);
    if (!armed || arrived[i]) return;
    torch::NoGradGuard no_grad;
    slice(i).copy_(grad);
    arrived[i] = true;
    --buckets[slots[i].bucket].pending;
    launch_ready();
  }
};

GradReducer::GradReducer(std::vector<torch::Tensor> params, World& world, double bucket_mib, double first_bucket_mib)
    : impl_(std::make_unique<Impl>(std::move(params), world)) {
  auto& m = *impl_;
  m.pg = dynamic_cast<ProcessGroupWorld*>(&world);
  if (!m.pg) return;  // one process without a launcher: nothing to average
  // Buckets from the last parameter backwards: the output layers' gradients arrive first. The first bucket is small
  // so that communication starts early.
  m.slots.resize(m.params.size());
  std::vector<std::vector<size_t>> groups;
  int64_t bytes = 0;
  for (size_t k = m.params.size(); k-- > 0;) {
    const auto& p = m.params[k];
    const double cap = (groups.size() <= 1 ? first_bucket_mib : bucket_mib) * 1024 * 1024;
    const bool same_kind = !groups.empty() && m.params[groups.back().front()].scalar_type() == p.scalar_type() &&
                           m.params[groups.back().front()].device() == p.device();
    if (groups.empty() || !same_kind || static_cast<double>(bytes) >= cap) {
      groups.emplace_back();
      bytes = 0;
    }
    groups.back().push_back(k);
    bytes += p.numel() * static_cast<int64_t>(p.element_size());
  }
  for (auto& g : groups) {
    Impl::Bucket b;
    int64_t n = 0;
    for (size_t k : g) {
      m.slots[k] = {m.buckets.size(), n, m.params[k].numel()};
      n += m.params[k].numel();
    }
    b.flat = torch::zeros({n}, m.params[g.front()].options().requires_grad(false));
    b.members = g;
    m.buckets.push_back(std::move(b));
  }
  m.arrived.assign(m.params.size(), false);
  for (size_t k = 0; k < m.params.size(); ++k) {
    Impl* impl = impl_.get();
    m.hooks.push_back(m.params[k].register_hook([impl, k](const torch::Tensor& g) { impl->on_grad(k, g); }));
  }
}

GradReducer::~GradReducer() {
  if (!impl_) return;
  for (size_t k = 0; k < impl_->hooks.size(); ++k) impl_->params[k].remove_hook(impl_->hooks[k]);
}

void GradReducer::prepare() {
  auto& m = *impl_;
  if (!m.pg) return;
  std::lock_guard<std::mutex> lock(m.mu);
  std::fill(m.arrived.begin(), m.arrived.end(), false);
  for (auto& b : m.buckets) {
    b.pending = b.members.size();
    b.launched = false;
    b.work.reset();
  }
  m.next_launch = 0;
  m.armed = true;
}

void GradReducer::finish() {
  auto& m = *impl_;
  if (!m.pg) return;
  const auto t0 = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(m.mu);
  m.armed = false;
  m.launched_in_backward = static_cast<int64_t>(m.next_launch);
  torch::NoGradGuard no_grad;
  // A parameter outside this step's graph contributes zeros, on every rank alike.
  for (size_t k = 0; k < m.params.size(); ++k) {
    if (m.arrived[k]) continue;
    m.slice(k).zero_();
    m.arrived[k] = true;
    --m.buckets[m.slots[k].bucket].pending;
  }
  m.launch_ready();
  const double inv = 1.0 / m.world.size();
  for (auto& b : m.buckets) {
    try {
      m.pg->wait(*b.work);
    } catch (const std::exception& e) {
      m.pg->fail("gradient all_reduce", e);
    }
    b.flat.mul_(inv);
  }
  for (size_t k = 0; k < m.params.size(); ++k) {
    auto avg = m.slice(k);
    auto& g = m.params[k].mutable_grad();
    if (g.defined()) g.copy_(avg);
    else g = avg.clone(m.params[k].suggest_memory_format());
  }
  m.exposed_wait_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int64_t GradReducer::num_buckets() const { return static_cast<int64_t>(impl_->buckets.size()); }
double GradReducer::last_exposed_wait_s() const { return impl_->exposed_wait_s; }
int64_t GradReducer::last_launched_during_backward() const { return impl_->launched_in_backward; }

}  // namespace fm::dist
