#pragma once
// Where this process sits in a multi-process job, read from the variables its launcher sets. Two launchers are known,
// tried in this order: torchrun (RANK, WORLD_SIZE, ...; the PyTorch user's usual `torchrun --no-python fm ...`) and
// SLURM's srun (SLURM_PROCID, SLURM_NTASKS, ...). With neither, the job is one process. Pure: the environment comes in
// as a lookup function, so every case is testable without touching the process's own environment.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace fm::dist {

struct LaunchEnv {
  std::string launcher = "none";  // none | torchrun | slurm
  int rank = 0;
  int size = 1;
  int local_rank = 0;  // this process's device index on its node
  std::string master_addr;  // where rank 0's c10d TCPStore listens
  int master_port = 0;
  // torchrun's elastic agent already serves a TCPStore at master_addr:master_port: every rank connects as a client
  // (rank 0 must not try to bind the port a second time).
  bool agent_store = false;
  // Prefix for every store key: keys of a restarted attempt (TORCHELASTIC_RESTART_COUNT) never meet a dead attempt's.
  std::string store_prefix;
};

// Returns the variable's value, or nothing when it is unset.
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;

// Reads the launcher's variables; a malformed or inconsistent value throws InputError naming the variable.
LaunchEnv parse_launch_env(const EnvLookup& env);

// The process's own environment as an EnvLookup.
EnvLookup process_env();

// SLURM's compressed host list ("gpu[01-04,07],login1") expanded in order; zero padding kept. InputError naming
// `var` on a malformed list.
std::vector<std::string> expand_slurm_nodelist(const std::string& list, const std::string& var = "SLURM_JOB_NODELIST");

// The rendezvous port of a SLURM job without MASTER_PORT: 15000 + the job id's last four digits (Lightning's rule,
// so that two jobs sharing a first node rarely collide).
int slurm_port(const std::string& job_id);

}  // namespace fm::dist
