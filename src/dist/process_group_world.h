#pragma once
// A World of several processes on c10d, LibTorch's own distributed engine: a TCPStore for the rendezvous (rank 0's,
// or torchrun's agent store), ProcessGroupGloo on the CPU, ProcessGroupNCCL on CUDA. Only world.cpp and the gradient
// reducer need this header; the c10d headers stay out of it.
#include <chrono>
#include <memory>
#include <string>

#include "dist/launch_env.h"
#include "dist/world.h"

namespace c10d {
class Backend;
class Work;
}

namespace fm::dist {

class ProcessGroupWorld : public World {
 public:
  // The c10d backend, for asynchronous collectives (the gradient reducer launches its buckets through it).
  virtual c10d::Backend& backend() = 0;
  virtual std::chrono::milliseconds timeout() const = 0;
  // Waits until `work` (a collective launched through backend()) has finished; throws when it failed or did not
  // finish within timeout(). On NCCL the host waits too: fm runs ProcessGroupNCCL with blocking wait, so a plain
  // work.wait() holds the host and throws as well, only with a coarser check for completion.
  virtual void wait(c10d::Work& work) = 0;
  // A c10d failure (peer gone, timeout) turned into an error that says what it means for the job.
  [[noreturn]] virtual void fail(const std::string& op, const std::exception& e) const = 0;
  virtual void shutdown() = 0;
};

// Joins the job: connects to (or, as rank 0 without an agent store, serves) the TCPStore, checks that every rank
// there is of this job with this `token` (dist/rendezvous.h: job_token), then builds the backend for `device`. Throws
// after `timeout` when the other ranks do not arrive; an InputError, naming the variables, when a rank is of another
// job or the master address or port cannot serve.
std::unique_ptr<ProcessGroupWorld> make_process_group_world(const LaunchEnv& env, const torch::Device& device,
                                                            std::chrono::milliseconds timeout,
                                                            const std::string& token);

}  // namespace fm::dist
