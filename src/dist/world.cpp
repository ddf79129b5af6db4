#include "dist/world.h"

#include <memory>

#include <spdlog/spdlog.h>

#include "dist/launch_env.h"
#include "dist/process_group_world.h"
#include "dist/rendezvous.h"
#include "dist/single_process_world.h"
#include "util/device.h"
#include "util/error.h"

namespace fm::dist {
namespace {

// No launcher: a world of one.
SingleProcessWorld& single() {
  static SingleProcessWorld w;
  return w;
}

// Never destroyed: a backend torn down by the exit handlers while another rank is gone can block in its destructor.
ProcessGroupWorld*& current() {
  static ProcessGroupWorld* w = nullptr;
  return w;
}

std::optional<torch::Device>& joined_device() {
  static std::optional<torch::Device> d;
  return d;
}

// One GPU per process: a launched job's "cuda" is cuda:LOCAL_RANK. An explicit cuda:N would put every rank of a node
// on the same GPU, so a multi-process job refuses it.
torch::Device device_for(const std::string& spec, const LaunchEnv& env) {
  if (env.launcher == "none") return resolve_device(spec);
  if (spec == "cpu") return torch::kCPU;
  if (spec == "auto" && !torch::cuda::is_available()) return torch::kCPU;
  if (spec != "auto" && spec != "cuda") {
    torch::Device d = resolve_device(spec);  // a bad spec gets resolve_device's own message
    if (d.is_cuda() && env.size > 1 && d.index() != env.local_rank)
      throw InputError("device '" + spec + "': in a job of " + std::to_string(env.size) +
                       " processes each one takes cuda:LOCAL_RANK; set device to cuda (or auto)");
    return d;
  }
  auto count = static_cast<int>(torch::cuda::device_count());
  // A process that sees one GPU only (srun --gpus-per-task=1, or CUDA_VISIBLE_DEVICES set per rank) takes that one.
  if (count == 1) return resolve_device("cuda:0");
  if (env.local_rank >= count)
    throw InputError("local rank " + std::to_string(env.local_rank) + " (from " + env.launcher + ") has no GPU: only " +
                     std::to_string(count) + " CUDA device(s) on this node; start at most that many processes per node");
  return resolve_device("cuda:" + std::to_string(env.local_rank));
}

}  // namespace

World& world() {
  if (auto& w = current()) return *w;
  return single();
}

torch::Device init_world(const std::string& device_spec, std::chrono::milliseconds timeout,
                         std::string_view job_config) {
  if (joined_device()) return *joined_device();
  LaunchEnv env = parse_launch_env(process_env());
  torch::Device device = device_for(device_spec, env);
  // A launched job is a process group even of one process, so that `torchrun --nproc-per-node 1` runs the same
  // code (NCCL included) as a job of eight.
  if (env.launcher != "none") {
    current() = make_process_group_world(env, device, timeout, job_token(env, job_config)).release();
    // Rank 0 speaks for the job; the others only warn and fail, so a log holds one copy of each line.
    if (env.rank != 0) spdlog::set_level(spdlog::level::warn);
  } else {
    single().set_local_rank(env.local_rank);
  }
  joined_device() = device;
  return device;
}

void shutdown_world() {
  if (auto*& w = current()) {
    w->shutdown();
    w = nullptr;  // left undestroyed, as above; the process is about to end
  }
  joined_device().reset();
}

}  // namespace fm::dist
