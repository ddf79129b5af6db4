#pragma once
// Where this process sits in a multi-process job, read from the variables its launcher sets. Two launchers are known,
// tried in this order: torchrun (RANK, WORLD_SIZE, ...; the PyTorch user's usual `torchrun --no-python fm ...`) and
// SLURM's srun (SLURM_PROCID, SLURM_NTASKS, ...). With neither, the job is one process. Pure: the environment comes in
// as a lookup function, so every case is testable without touching the process's own environment.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace fm::dist {

struct LaunchEnv {
  std::string launcher = "none";  // none | torchrun | slurm
  int rank = 0;
  int size = 1;
  int local_rank = 0;  // this process's device index on its node
  std::string master_addr;  // where rank 0's c10d TCPStore listens
  int master_port = 0;
  // The variables master_addr and master_port come from, for messages ("MASTER_ADDR", "SLURM_STEP_NODELIST",
  // "SLURM_JOB_ID and SLURM_STEP_ID", ...).
  std::string master_addr_from;
  std::string master_port_from;
  // torchrun's elastic agent already serves a TCPStore at master_addr:master_port: every rank connects as a client
  // (rank 0 must not try to bind the port a second time).
  bool agent_store = false;
  // The ranks run on more than one node, as far as the launcher says (false when it does not say). A store bound to a
  // loopback address would then shut the other nodes out.
  bool multi_node = false;
  // The launcher's variables that name this job, as (name, value) in a fixed order: SLURM_JOB_ID, SLURM_STEP_ID and
  // SLURM_NTASKS under srun; TORCHELASTIC_RUN_ID, TORCHELASTIC_RESTART_COUNT and WORLD_SIZE under torchrun. Every rank
  // of one job has the same values; the rendezvous refuses a rank whose values differ.
  std::vector<std::pair<std::string, std::string>> job;
  // Prefix of the rendezvous keys, where every rank records which job it belongs to. It is the same for any job that
  // reaches this store (under torchrun: for any run at this restart), so that a rank of another job or step meets
  // this job's ranks there and is refused instead of waiting under a prefix of its own.
  std::string rendezvous_prefix;
  // Prefix of every other key (the process group's): unique to the job and step, or to torchrun's run and restart, so
  // that two jobs at one store, or a restart and the attempt that died, never read each other's keys.
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

// The rendezvous port of an srun step without MASTER_PORT: 15000 + (the job id's last four digits + 7919 x the step
// id) mod 10000. Step 0 keeps Lightning's rule (15000 + the last four digits); the steps of one job differ in their
// ports (7919 is prime to 10000, so the first 10000 steps all get distinct ones), and so do neighbouring job ids.
// InputError naming SLURM_JOB_ID or SLURM_STEP_ID when one is not a number.
int slurm_port(const std::string& job_id, const std::string& step_id);

}  // namespace fm::dist
