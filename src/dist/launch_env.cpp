#include "dist/launch_env.h"

#include <cstdlib>

#include "util/error.h"

namespace fm::dist {
namespace {

InputError env_error(const std::string& var, const std::string& value, const std::string& problem) {
  return InputError("environment variable " + var + "=\"" + value + "\": " + problem);
}

// A whole decimal number in [lo, hi]; "4x", "", "-1" and overflow are errors naming the variable.
int64_t parse_int(const std::string& var, const std::string& s, int64_t lo, int64_t hi) {
  if (s.empty() || s.size() > 18 || s.find_first_not_of("0123456789") != std::string::npos)
    throw env_error(var, s, "not a whole number");
  int64_t v = std::stoll(s);
  if (v < lo || v > hi)
    throw env_error(var, s, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return v;
}

std::string require(const EnvLookup& env, const std::string& var, const std::string& why) {
  auto v = env(var);
  if (!v) throw InputError("environment variable " + var + " is not set (" + why + ")");
  if (v->empty()) throw env_error(var, *v, "empty");
  return *v;
}

constexpr int64_t kMaxWorld = 1 << 20;
constexpr int64_t kMaxStepId = 4294967295;  // SLURM's step ids are 32-bit; its special steps sit at the top

// RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE, each checked against the others.
void torchrun_ranks(const EnvLookup& env, const std::string& why, LaunchEnv& e) {
  e.size = static_cast<int>(parse_int("WORLD_SIZE", require(env, "WORLD_SIZE", why), 1, kMaxWorld));
  e.rank = static_cast<int>(parse_int("RANK", require(env, "RANK", why), 0, kMaxWorld));
  if (e.rank >= e.size)
    throw env_error("RANK", std::to_string(e.rank), "must be below WORLD_SIZE=" + std::to_string(e.size));
  e.local_rank = static_cast<int>(parse_int("LOCAL_RANK", require(env, "LOCAL_RANK", why), 0, kMaxWorld));
  if (auto lws = env("LOCAL_WORLD_SIZE")) {
    int64_t local_size = parse_int("LOCAL_WORLD_SIZE", *lws, 1, e.size);
    if (e.local_rank >= local_size)
      throw env_error("LOCAL_RANK", std::to_string(e.local_rank),
                      "must be below LOCAL_WORLD_SIZE=" + std::to_string(local_size));
    e.multi_node = e.size > local_size;
  } else if (e.local_rank > e.rank) {
    throw env_error("LOCAL_RANK", std::to_string(e.local_rank), "must not exceed RANK=" + std::to_string(e.rank));
  }
}

// The run (TORCHELASTIC_RUN_ID) and its restart (TORCHELASTIC_RESTART_COUNT): the job's name and key prefixes.
void torchrun_job(const EnvLookup& env, LaunchEnv& e) {
  int64_t restart = 0;
  if (auto rc = env("TORCHELASTIC_RESTART_COUNT")) restart = parse_int("TORCHELASTIC_RESTART_COUNT", *rc, 0, kMaxWorld);
  const std::string run_id = env("TORCHELASTIC_RUN_ID").value_or("");
  e.job = {{"TORCHELASTIC_RUN_ID", run_id},
           {"TORCHELASTIC_RESTART_COUNT", std::to_string(restart)},
           {"WORLD_SIZE", std::to_string(e.size)}};
  // torchrun's agent store outlives a restart with every key of the attempt that died: each attempt has a prefix of
  // its own, and the run id keeps two runs that reach one store apart.
  const std::string attempt = "/worker/attempt_" + std::to_string(restart) + "/fm/";
  e.rendezvous_prefix = attempt + "rendezvous/";
  e.store_prefix = attempt + "run_" + run_id + "/";
}

LaunchEnv from_torchrun(const EnvLookup& env) {
  const std::string why = "torchrun sets it; RANK or WORLD_SIZE is set, so fm takes this for a torchrun launch";
  LaunchEnv e;
  e.launcher = "torchrun";
  torchrun_ranks(env, why, e);
  e.master_addr = require(env, "MASTER_ADDR", why);
  e.master_port = static_cast<int>(parse_int("MASTER_PORT", require(env, "MASTER_PORT", why), 1, 65535));
  e.master_addr_from = "MASTER_ADDR";
  e.master_port_from = "MASTER_PORT";
  if (auto agent = env("TORCHELASTIC_USE_AGENT_STORE")) {
    // Python's str(bool), as torchrun writes it.
    if (*agent == "True") e.agent_store = true;
    else if (*agent != "False") throw env_error("TORCHELASTIC_USE_AGENT_STORE", *agent, "must be True or False");
  }
  torchrun_job(env, e);
  return e;
}

// The step's hosts: SLURM_STEP_NODELIST (srun sets it for every task), else the job's SLURM_JOB_NODELIST; the first
// host is the step's rank 0. Empty when neither is set. The job's list is wrong for a step on part of the allocation.
std::vector<std::string> slurm_step_hosts(const EnvLookup& env, std::string& var) {
  for (const char* name : {"SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST"})
    if (auto list = env(name)) {
      var = name;
      return expand_slurm_nodelist(*list, name);
    }
  return {};
}

// Rank 0's address and port: MASTER_ADDR and MASTER_PORT when set, else the step's first host and the port
// slurm_port() derives from the job and step ids.
void slurm_master(const EnvLookup& env, const std::string& why, LaunchEnv& e) {
  std::string list_var;
  const std::vector<std::string> hosts = slurm_step_hosts(env, list_var);
  e.multi_node = hosts.size() > 1;
  if (auto addr = env("MASTER_ADDR"); addr && !addr->empty()) {
    e.master_addr = *addr;
    e.master_addr_from = "MASTER_ADDR";
  } else if (!hosts.empty()) {
    e.master_addr = hosts.front();
    e.master_addr_from = list_var;
  } else {
    require(env, "SLURM_STEP_NODELIST", why + "; rank 0's address comes from it when MASTER_ADDR is unset");
  }
  const int derived = slurm_port(require(env, "SLURM_JOB_ID", why), require(env, "SLURM_STEP_ID", why));
  if (auto port = env("MASTER_PORT"); port && !port->empty()) {
    e.master_port = static_cast<int>(parse_int("MASTER_PORT", *port, 1, 65535));
    e.master_port_from = "MASTER_PORT";
  } else {
    e.master_port = derived;
    e.master_port_from = "SLURM_JOB_ID and SLURM_STEP_ID";
  }
}

LaunchEnv from_slurm(const EnvLookup& env) {
  const std::string why = "srun sets it; SLURM_PROCID and SLURM_STEP_ID are set, so fm takes this for an srun step";
  LaunchEnv e;
  e.launcher = "slurm";
  e.size = static_cast<int>(parse_int("SLURM_NTASKS", require(env, "SLURM_NTASKS", why), 1, kMaxWorld));
  e.rank = static_cast<int>(parse_int("SLURM_PROCID", require(env, "SLURM_PROCID", why), 0, kMaxWorld));
  if (e.rank >= e.size)
    throw env_error("SLURM_PROCID", std::to_string(e.rank), "must be below SLURM_NTASKS=" + std::to_string(e.size));
  e.local_rank = static_cast<int>(parse_int("SLURM_LOCALID", require(env, "SLURM_LOCALID", why), 0, kMaxWorld));
  if (e.local_rank > e.rank)
    throw env_error("SLURM_LOCALID", std::to_string(e.local_rank),
                    "must not exceed SLURM_PROCID=" + std::to_string(e.rank));
  slurm_master(env, why, e);
  const std::string job_id = *env("SLURM_JOB_ID"), step_id = *env("SLURM_STEP_ID");  // checked by slurm_master
  e.job = {{"SLURM_JOB_ID", job_id}, {"SLURM_STEP_ID", step_id}, {"SLURM_NTASKS", std::to_string(e.size)}};
  e.rendezvous_prefix = "/fm/rendezvous/";
  e.store_prefix = "/fm/job_" + job_id + "/step_" + step_id + "/";
  return e;
}

// One host-list element that may hold bracket groups ("gpu[01-02]-ib[0-1]"): the cartesian product, in order.
void expand_element(const std::string& item, const std::string& var, const std::string& whole,
                    std::vector<std::string>& out) {
  size_t open = item.find('[');
  if (open == std::string::npos) {
    if (item.find(']') != std::string::npos) throw env_error(var, whole, "unbalanced ']' in \"" + item + "\"");
    out.push_back(item);
    return;
  }
  size_t close = item.find(']', open);
  if (close == std::string::npos) throw env_error(var, whole, "unbalanced '[' in \"" + item + "\"");
  const std::string head = item.substr(0, open), body = item.substr(open + 1, close - open - 1),
                    tail = item.substr(close + 1);
  if (body.empty()) throw env_error(var, whole, "empty brackets in \"" + item + "\"");
  std::vector<std::string> tails;
  expand_element(tail, var, whole, tails);
  size_t start = 0;
  while (start <= body.size()) {
    size_t comma = body.find(',', start);
    std::string range = body.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    size_t dash = range.find('-');
    std::string lo_s = range.substr(0, dash), hi_s = dash == std::string::npos ? lo_s : range.substr(dash + 1);
    auto is_num = [](const std::string& s) {
      return !s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == std::string::npos;
    };
    if (!is_num(lo_s) || !is_num(hi_s)) throw env_error(var, whole, "bad range \"" + range + "\"");
    long lo = std::stol(lo_s), hi = std::stol(hi_s);
    if (hi < lo) throw env_error(var, whole, "descending range \"" + range + "\"");
    if (hi - lo > 100000) throw env_error(var, whole, "range \"" + range + "\" is implausibly long");
    for (long n = lo; n <= hi; ++n) {
      std::string num = std::to_string(n);
      // SLURM pads to the width of the range's first number ("01-04" -> 01, 02, 03, 04).
      if (num.size() < lo_s.size()) num.insert(0, lo_s.size() - num.size(), '0');
      for (const auto& t : tails) out.push_back(head + num + t);
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
}

}  // namespace

std::vector<std::string> expand_slurm_nodelist(const std::string& list, const std::string& var) {
  if (list.empty()) throw env_error(var, list, "empty host list");
  std::vector<std::string> hosts;
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i <= list.size(); ++i) {
    char c = i < list.size() ? list[i] : ',';
    if (c == '[') ++depth;
    if (c == ']' && --depth < 0) throw env_error(var, list, "unbalanced ']'");
    if (c == '[' && depth > 1) throw env_error(var, list, "nested '['");
    if (c == ',' && depth == 0) {
      std::string item = list.substr(start, i - start);
      if (item.empty()) throw env_error(var, list, "empty host name");
      expand_element(item, var, list, hosts);
      start = i + 1;
    }
  }
  if (depth != 0) throw env_error(var, list, "unbalanced '['");
  return hosts;
}

int slurm_port(const std::string& job_id, const std::string& step_id) {
  // Array jobs ("1234_7") and heterogeneous ones ("1234+0") keep the base id first.
  const std::string digits = job_id.substr(0, job_id.find_first_of("_+"));
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos)
    throw env_error("SLURM_JOB_ID", job_id, "not a job id");
  const int64_t last4 = std::stoll(digits.size() > 4 ? digits.substr(digits.size() - 4) : digits);
  const int64_t step = parse_int("SLURM_STEP_ID", step_id, 0, kMaxStepId);
  return static_cast<int>(15000 + (last4 + 7919 * (step % 10000)) % 10000);
}

LaunchEnv parse_launch_env(const EnvLookup& env) {
  if (env("RANK") || env("WORLD_SIZE")) return from_torchrun(env);
  // Inside an sbatch script SLURM_PROCID is set too, but only srun starts the tasks; SLURM_STEP_ID marks an srun step.
  if (env("SLURM_PROCID") && env("SLURM_STEP_ID")) return from_slurm(env);
  return LaunchEnv{};
}

EnvLookup process_env() {
  return [](const std::string& var) -> std::optional<std::string> {
    const char* v = std::getenv(var.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  };
}

}  // namespace fm::dist
