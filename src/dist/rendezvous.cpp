#include "dist/rendezvous.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "util/error.h"

namespace fm::dist {
namespace {

// ---- the store's listening socket ------------------------------------------------------------------------------

// Where master_addr came from, for messages: the variable and its value, or the host list it was taken from.
std::string master_addr_origin(const LaunchEnv& env) {
  if (env.master_addr_from == "MASTER_ADDR") return "environment variable MASTER_ADDR=\"" + env.master_addr + "\"";
  return "rank 0's host \"" + env.master_addr + "\" (the first of " + env.master_addr_from + ")";
}

std::string address_text(const sockaddr* a) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (a->sa_family == AF_INET)
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(a)->sin_addr, buf, sizeof buf);
  else if (a->sa_family == AF_INET6)
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(a)->sin6_addr, buf, sizeof buf);
  return buf;
}

bool is_loopback(const sockaddr* a) {
  if (a->sa_family == AF_INET)
    return (ntohl(reinterpret_cast<const sockaddr_in*>(a)->sin_addr.s_addr) >> 24) == 127;
  if (a->sa_family != AF_INET6) return false;
  const in6_addr& v6 = reinterpret_cast<const sockaddr_in6*>(a)->sin6_addr;
  return IN6_IS_ADDR_LOOPBACK(&v6) || (IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127);
}

using AddrInfo = std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)>;

// The addresses master_addr:master_port resolves to on this host, in the resolver's order (the order in which a
// TCPStore client tries them).
AddrInfo resolve_master(const LaunchEnv& env) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const int rc = ::getaddrinfo(env.master_addr.c_str(), std::to_string(env.master_port).c_str(), &hints, &found);
  if (rc != 0)
    throw InputError(master_addr_origin(env) + ": rank 0 cannot resolve it to an address (" + ::gai_strerror(rc) +
                     ")");
  return AddrInfo(found, ::freeaddrinfo);
}

// A socket bound to the first address master_addr resolves to, listening: the store's server takes it over, so the
// store is reachable at that address only, not on every interface of rank 0's host.
int listen_socket(const LaunchEnv& env) {
  const AddrInfo found = resolve_master(env);
  const addrinfo& a = *found;
  const std::string addr = address_text(a.ai_addr), at = addr + ":" + std::to_string(env.master_port);
  if (env.multi_node && is_loopback(a.ai_addr))
    throw InputError(master_addr_origin(env) + ": resolves on rank 0's host to " + addr +
                     ", a loopback address the ranks on other nodes cannot reach; set MASTER_ADDR to this node's "
                     "address on the job's network");
  const int fd = ::socket(a.ai_family, a.ai_socktype | SOCK_CLOEXEC, a.ai_protocol);
  if (fd < 0) throw std::runtime_error("socket() for the store at " + at + ": " + std::strerror(errno));
  const int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);  // a restart may bind while old connections linger
  if (::bind(fd, a.ai_addr, a.ai_addrlen) != 0 || ::listen(fd, SOMAXCONN) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EADDRNOTAVAIL)
      throw InputError(master_addr_origin(env) + ": resolves to " + addr +
                       ", which is not an address of rank 0's host (rank 0 serves the store there)");
    if (err == EADDRINUSE)
      throw InputError("port " + std::to_string(env.master_port) + " (from " + env.master_port_from + ") on " + addr +
                       " is in use, perhaps by another job's store; set MASTER_PORT to a free port");
    throw std::runtime_error("cannot listen at " + at + " for the store: " + std::strerror(err));
  }
  return fd;
}

// ---- the members' records --------------------------------------------------------------------------------------

// What a rank records about its job: the launcher's variables and the token.
std::string record_of(const LaunchEnv& env, const std::string& token) {
  nlohmann::json vars = nlohmann::json::array();
  for (const auto& [name, value] : env.job) vars.push_back({name, value});
  return nlohmann::json{{"vars", vars}, {"token", token}}.dump();
}

// The job variables of a record (name -> value), or nothing when it is not a record of fm's.
std::optional<std::map<std::string, std::string>> vars_of(const std::string& record) {
  const auto j = nlohmann::json::parse(record, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object() || !j.contains("vars") || !j.contains("token")) return std::nullopt;
  std::map<std::string, std::string> vars;
  for (const auto& v : j.at("vars")) vars[v.at(0).get<std::string>()] = v.at(1).get<std::string>();
  return vars;
}

// Why the record `theirs` is not of this rank's job (`mine`), with what to do about it; "" when it is.
std::string difference(const std::string& theirs, const std::string& mine) {
  if (theirs == mine) return "";
  const auto t = vars_of(theirs), m = vars_of(mine);
  if (!t) return "what it wrote there is not fm's record of a job";
  std::string out;
  for (const auto& [name, value] : *m) {
    auto it = t->find(name);
    const std::string there = it == t->end() ? "unset" : "\"" + it->second + "\"";
    if (it == t->end() || it->second != value)
      out += (out.empty() ? "" : ", ") + name + "=" + there + " there, \"" + value + "\" here";
  }
  if (!out.empty()) return out + "; two jobs or steps met at one store: give each its own MASTER_PORT";
  return "its job token differs while its job variables agree: the ranks were given different configs";
}

std::string slot(const LaunchEnv& env, int rank) { return env.rendezvous_prefix + "rank_" + std::to_string(rank); }
std::string verdict_key(const LaunchEnv& env) { return env.rendezvous_prefix + "verdict"; }
std::string ack_key(const LaunchEnv& env, int rank) { return env.rendezvous_prefix + "ack_" + std::to_string(rank); }

// A rank whose record differs from this rank's and why, or a rendezvous that could not finish (`error`).
struct Verdict {
  int rank = -1;
  std::string why;
  std::string error;
  bool ok() const { return rank < 0 && error.empty(); }
};

// Rank 0: every other rank's record, compared with its own; the first that differs.
Verdict first_mismatch(c10d::Store& store, const LaunchEnv& env, const std::string& mine) {
  std::vector<std::string> keys;
  for (int r = 1; r < env.size; ++r) keys.push_back(slot(env, r));
  if (keys.empty()) return {};
  try {
    store.wait(keys);
  } catch (const c10::Error&) {
    std::string missing;
    for (int r = 1; r < env.size && missing.size() < 60; ++r)
      if (!store.check({slot(env, r)})) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
    return {-1, "", "rank(s) " + missing + " did not reach the rendezvous"};
  }
  const auto records = store.multiGet(keys);
  for (size_t i = 0; i < records.size(); ++i)
    if (auto why = difference(std::string(records[i].begin(), records[i].end()), mine); !why.empty())
      return {static_cast<int>(i) + 1, why, ""};
  return {};
}

std::string verdict_text(const Verdict& v) {
  return nlohmann::json{{"rank", v.rank}, {"why", v.why}, {"error", v.error}}.dump();
}

// A rank other than 0: rank 0's verdict, once it is there (rank 0 waits for the last rank before it decides, hence
// twice the store's timeout).
Verdict rank_zeros_verdict(c10d::Store& store, const LaunchEnv& env) {
  store.wait({verdict_key(env)}, 2 * store.getTimeout());
  const auto j = nlohmann::json::parse(store.get_to_str(verdict_key(env)));
  Verdict v{j.at("rank").get<int>(), j.at("why").get<std::string>(), j.at("error").get<std::string>()};
  if (!v.why.empty()) v.why = "seen by rank 0: " + v.why;
  return v;
}

// Rank 0, when it refuses the job: it serves the store, so it stays until every other rank has read the verdict (or
// the store's timeout has passed), and each of them ends with the verdict rather than a lost connection.
void wait_for_acks(c10d::Store& store, const LaunchEnv& env) {
  std::vector<std::string> keys;
  for (int r = 1; r < env.size; ++r) keys.push_back(ack_key(env, r));
  try {
    if (!keys.empty()) store.wait(keys);
  } catch (const c10::Error&) {
    // A rank that never read it ends on its own timeout; the refusal stands.
  }
}

// This rank's view: its own slot taken, else (rank 0) every rank's record, else rank 0's record and verdict.
Verdict decide(c10d::Store& store, const LaunchEnv& env, const std::string& mine) {
  // The slot is this rank's only if it was free: a process of another job that took it first is named here.
  if (auto why = difference(store.compareSet(slot(env, env.rank), "", mine), mine); !why.empty())
    return {env.rank, why, ""};
  if (env.rank == 0) return first_mismatch(store, env, mine);
  if (auto why = difference(store.get_to_str(slot(env, 0)), mine); !why.empty()) return {0, why, ""};
  return rank_zeros_verdict(store, env);
}

}  // namespace

std::string job_token(const LaunchEnv& env, std::string_view shared) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a, 64-bit
  auto mix = [&h](std::string_view s) {
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;  // a separator no UTF-8 text holds
  };
  for (const auto& [name, value] : env.job) {
    mix(name);
    mix(value);
  }
  mix(shared);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

c10::intrusive_ptr<c10d::Store> open_store(const LaunchEnv& env, std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions o;
  o.port = static_cast<uint16_t>(env.master_port);
  o.timeout = timeout;
  if (env.agent_store) {
    // torchrun's agent serves the store and has already counted its workers.
    o.isServer = false;
    o.waitWorkers = false;
  } else {
    o.isServer = env.rank == 0;
    o.numWorkers = static_cast<size_t>(env.size);
    o.waitWorkers = true;
    if (o.isServer) o.masterListenFd = listen_socket(env);
  }
  return c10::make_intrusive<c10d::TCPStore>(env.master_addr, o);
}

void check_members(c10d::Store& store, const LaunchEnv& env, const std::string& token) {
  const Verdict v = decide(store, env, record_of(env, token));
  if (env.rank == 0) {
    store.set(verdict_key(env), verdict_text(v));
    if (!v.ok()) wait_for_acks(store, env);
  } else {
    store.set(ack_key(env, env.rank), "read");
  }
  if (!v.error.empty()) throw std::runtime_error(v.error);
  if (v.ok()) return;
  const std::string who = v.rank == env.rank ? "the process that joined first as rank " : "rank ";
  throw InputError(who + std::to_string(v.rank) + " at the store " + env.master_addr + ":" +
                   std::to_string(env.master_port) + " is not of this job: " + v.why);
}

}  // namespace fm::dist
