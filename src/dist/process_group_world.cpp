#include "dist/process_group_world.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/utils/tensor_flatten.h>
#ifdef FM_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <stdexcept>
#include <thread>

#include "dist/rendezvous.h"
#include "util/error.h"

namespace fm::dist {
namespace {

class C10dWorld final : public ProcessGroupWorld {
 public:
  C10dWorld(const LaunchEnv& env, const torch::Device& device, std::chrono::milliseconds timeout,
            const std::string& token)
      : env_(env), device_(device), timeout_(timeout) {
    try {
      connect(token);
    } catch (const InputError& e) {
      throw InputError(who() + ": " + e.what());
    } catch (const std::exception& e) {
      throw std::runtime_error(who() + ": could not join the job (" + env_.launcher + ", store at " +
                               env_.master_addr + ":" + std::to_string(env_.master_port) + ") within " + seconds() +
                               ": " + what_of(e));
    }
  }

  int rank() const override { return env_.rank; }
  int size() const override { return env_.size; }
  int local_rank() const override { return env_.local_rank; }
  torch::Device device() const override { return device_; }
  bool process_group() const override { return true; }
  c10d::Backend& backend() override { return *pg_; }
  std::chrono::milliseconds timeout() const override { return timeout_; }

  void all_reduce_sum(std::vector<torch::Tensor>& tensors) override {
    for_each_flat(tensors, /*write_back=*/true, [&](std::vector<at::Tensor>& flat) {
      run("all_reduce", [&] { wait(*pg_->allreduce(flat)); });
    });
  }

  void broadcast(std::vector<torch::Tensor>& tensors, int root) override {
    c10d::BroadcastOptions o;
    o.rootRank = root;
    for_each_flat(tensors, /*write_back=*/rank() != root, [&](std::vector<at::Tensor>& flat) {
      run("broadcast", [&] { wait(*pg_->broadcast(flat, o)); });
    });
  }

  torch::Tensor all_gather_cat(const torch::Tensor& t) override {
    TORCH_CHECK(t.dim() >= 1, "all_gather_cat needs a tensor with a leading dimension");
    // Lengths first: the ranks may hold different numbers of rows; the rows travel padded to the longest.
    auto len = torch::tensor({t.size(0)}, torch::dtype(torch::kInt64).device(t.device()));
    auto lens = gather(len).cpu();
    int64_t longest = lens.max().item<int64_t>();
    auto shape = t.sizes().vec();
    if (longest == 0) return t.new_empty(shape);
    shape[0] = longest;
    auto padded = t.new_zeros(shape);
    padded.narrow(0, 0, t.size(0)).copy_(t);
    auto all = gather(padded);
    std::vector<torch::Tensor> parts;
    for (int r = 0; r < size(); ++r) parts.push_back(all.narrow(0, r * longest, lens[r].item<int64_t>()));
    return torch::cat(parts);
  }

  void barrier() override { any(false); }

  bool any(bool flag) override {
    std::vector<at::Tensor> v{torch::tensor({flag ? 1 : 0}, torch::dtype(torch::kInt32).device(device_))};
    run("any", [&] { wait(*pg_->allreduce(v)); });
    return v[0].item<int32_t>() > 0;  // the host waits here, as agreement needs
  }

  [[noreturn]] void fail(const std::string& op, const std::exception& e) const override {
    throw std::runtime_error(who() + ": " + op +
                             " failed: another rank exited, was stopped or did not answer within dist.timeout_s=" +
                             seconds() + " (" + what_of(e) + ")");
  }

  void wait(c10d::Work& work) override {
    if (device_.is_cuda()) {
      // NCCL's blocking wait() sleeps between its checks for completion (10 ms in torch's source), which a small
      // collective would pay in full: checking here first, at a finer interval, costs it microseconds instead.
      const auto deadline = std::chrono::steady_clock::now() + timeout_;
      auto pause = std::chrono::microseconds(10);
      while (!work.isCompleted() && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(pause);
        pause = std::min(2 * pause, std::chrono::microseconds(1000));
      }
    }
    work.wait();  // throws when the collective failed or timed out
  }

  void shutdown() override {
    if (pg_) pg_->shutdown();
  }

 private:
  // The store, the check that every rank there is of this job, then the backend on the job's own key prefix.
  void connect(const std::string& token) {
    auto tcp = open_store(env_, timeout_);
    check_members(*tcp, env_, token);
    store_ = c10::make_intrusive<c10d::PrefixStore>(env_.store_prefix, tcp);
    pg_ = device_.is_cuda() ? make_nccl() : make_gloo();
  }

  c10::intrusive_ptr<c10d::Backend> make_nccl() {
#ifdef FM_WITH_NCCL
    c10::cuda::set_device(device_.index());
    // Blocking wait: every wait() on a collective holds the host until the collective has finished on the GPU, and
    // when it has not within the options' timeout (dist.timeout_s) aborts the communicator and throws on the host,
    // where fail() names the rank and the timeout as on Gloo. Without it wait() only orders the streams, the host
    // waits later in a device sync (.item()) that has no timeout, and only NCCL's watchdog ends the process (SIGABRT,
    // with a message of its own). ProcessGroupNCCL reads this variable in its constructor; no option sets it.
    ::setenv("TORCH_NCCL_BLOCKING_WAIT", "1", /*overwrite=*/1);
    auto o = c10d::ProcessGroupNCCL::Options::create();
    o->timeout = timeout_;
    auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(store_, env_.rank, env_.size, o);
    // Binding the device lets NCCL build its communicator now, on the right GPU, instead of at the first collective.
    nccl->setBoundDeviceId(device_);
    nccl->eagerConnectSingleDevice(device_);
    return nccl;
#else
    throw std::runtime_error("this fm was built without NCCL (nccl.h was not found at configure time)");
#endif
  }

  c10::intrusive_ptr<c10d::Backend> make_gloo() {
    auto o = c10d::ProcessGroupGloo::Options::create(timeout_);
    // Like torch.distributed: the interface GLOO_SOCKET_IFNAME names, else the address this host's name resolves to
    // (loopback when it resolves to nothing).
    if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
      o->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else
      o->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    return c10::make_intrusive<c10d::ProcessGroupGloo>(store_, env_.rank, env_.size, o);
  }

  // Collectives move one flat buffer per dtype: one message instead of one per tensor.
  template <class F>
  void for_each_flat(std::vector<torch::Tensor>& tensors, bool write_back, F&& op) {
    std::map<c10::ScalarType, std::vector<size_t>> by_type;
    for (size_t i = 0; i < tensors.size(); ++i) by_type[tensors[i].scalar_type()].push_back(i);
    for (auto& [type, idx] : by_type) {
      std::vector<at::Tensor> group;
      for (size_t i : idx) group.push_back(tensors[i]);
      if (group.size() == 1 && group[0].is_contiguous()) {
        op(group);  // in place
        continue;
      }
      std::vector<at::Tensor> flat{torch::utils::flatten_dense_tensors(group)};
      op(flat);
      if (!write_back) continue;
      auto parts = torch::utils::unflatten_dense_tensors(flat[0], group);
      torch::NoGradGuard no_grad;
      for (size_t k = 0; k < group.size(); ++k) group[k].copy_(parts[k]);
    }
  }

  // Every rank's `t` (same shape everywhere) stacked along dim 0 in rank order.
  torch::Tensor gather(const torch::Tensor& t) {
    std::vector<at::Tensor> in{t.contiguous()};
    std::vector<std::vector<at::Tensor>> out(1);
    for (int r = 0; r < size(); ++r) out[0].push_back(torch::empty_like(in[0]));
    run("all_gather", [&] { wait(*pg_->allgather(out, in)); });
    return torch::cat(out[0]);
  }

  template <class F>
  void run(const char* op, F&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      fail(op, e);
    }
  }

  std::string seconds() const {
    return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(timeout_).count()) + " s";
  }
  std::string who() const { return "rank " + std::to_string(env_.rank) + " of " + std::to_string(env_.size); }
  // The first line of the error: c10d's messages may go on with context lines, and fm's report is one line.
  static std::string what_of(const std::exception& e) {
    auto* c = dynamic_cast<const c10::Error*>(&e);
    const std::string all = c ? c->what_without_backtrace() : e.what();
    return all.substr(0, all.find('\n'));
  }

  LaunchEnv env_;
  torch::Device device_;
  std::chrono::milliseconds timeout_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Backend> pg_;
};

}  // namespace

std::unique_ptr<ProcessGroupWorld> make_process_group_world(const LaunchEnv& env, const torch::Device& device,
                                                            std::chrono::milliseconds timeout,
                                                            const std::string& token) {
  auto w = std::make_unique<C10dWorld>(env, device, timeout, token);
  spdlog::debug("rank {} of {} joined over {}", env.rank, env.size, device.is_cuda() ? "NCCL" : "Gloo");
  return w;
}

}  // namespace fm::dist
