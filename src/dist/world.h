#pragma once
// The process group as the trainer and the evaluators see it: this process's rank, the world size and the few
// collectives fm needs. Everything about how the processes found each other (torchrun, SLURM, c10d stores, NCCL or
// Gloo) stays behind this header; with no launcher in the environment the world is one process and every collective
// is the identity, so single-process code paths need no special case.
#include <torch/torch.h>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

namespace fm::dist {

class World {
 public:
  virtual ~World() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Index of this process's device on its node (cuda:local_rank()).
  virtual int local_rank() const = 0;
  // Where the tensors of a collective live: the job's CUDA device under NCCL, else the CPU.
  virtual torch::Device device() const { return torch::kCPU; }
  // Whether this process is a rank of a launched job (torchrun, srun), even of one: its collectives, and the gradient
  // reducer's hooks, run through c10d.
  virtual bool process_group() const { return false; }
  bool is_main() const { return rank() == 0; }
  bool distributed() const { return size() > 1; }

  // In place: every tensor becomes the sum over ranks (same shapes and dtypes on every rank).
  virtual void all_reduce_sum(std::vector<torch::Tensor>& tensors) = 0;
  // In place: every rank's tensors take root's values.
  virtual void broadcast(std::vector<torch::Tensor>& tensors, int root = 0) = 0;
  // Each rank's tensor (any length along dim 0, same trailing shape and dtype) concatenated in rank order, on every
  // rank.
  virtual torch::Tensor all_gather_cat(const torch::Tensor& t) = 0;
  virtual void barrier() = 0;
  // True on every rank when `flag` is true on any rank (stop agreement: one rank's signal stops all at one step).
  virtual bool any(bool flag) = 0;
};

// The process-wide world: one process until init_world() replaces it.
World& world();

// A world of this process alone, whatever launched it: for work a caller does whole in each process.
World& this_process_only();

// Joins the job the launcher describes (torchrun or srun, see dist/launch_env.h) and makes it the process-wide world;
// without a launcher the world stays one process. `device_spec` is the configured device (auto | cpu | cuda | cuda:N):
// in a launched job "auto" and "cuda" become cuda:LOCAL_RANK, one GPU per process, and the ranks talk over NCCL;
// on the CPU over Gloo. Returns the device this process computes on. Every collective that waits longer than
// `timeout` for another rank (dead, stopped, or off on another path) throws, naming the rank and the timeout, so a
// job never hangs silently. `job_config` is what every rank of the job must share besides the launcher's variables,
// such as the resolved config as JSON text: the ranks meet only when their launcher variables (job and step, or
// torchrun's run and restart) and a hash of `job_config` agree. Bad launcher variables, and a rank of another job or
// config at the store, throw InputError. A second call returns the first call's device.
torch::Device init_world(const std::string& device_spec, std::chrono::milliseconds timeout,
                         std::string_view job_config = {});

// Leaves the process group (NCCL's communicators and watchdog, Gloo's connections) before the process exits; the world
// is one process again afterwards. Harmless without init_world().
void shutdown_world();

}  // namespace fm::dist
