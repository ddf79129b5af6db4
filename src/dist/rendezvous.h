#pragma once
// How the processes of a launched job meet: the c10d TCPStore (served by rank 0 and bound to the master address, or
// torchrun's agent store), and the check that every process that reached it belongs to this job. Only
// process_group_world.cpp needs this header.
//
// What the store is, and what it is not: c10d's TCPStore has no authentication, so anyone who can reach its port can
// read and write every key. Binding it to the master address keeps it off the other interfaces of rank 0's host; the
// job token only keeps processes of other jobs (or of the same job with another config) from joining by mistake. The
// network between the ranks must be trusted.
#include <chrono>
#include <string>
#include <string_view>

#include <c10/util/intrusive_ptr.h>

#include "dist/launch_env.h"

namespace c10d {
class Store;
}

namespace fm::dist {

// A digest that every rank of one job computes alike, from the launcher's variables that name the job (env.job) and
// `shared`, what the ranks share besides (the resolved config's text; empty when there is none). 16 hex digits of a
// 64-bit FNV-1a hash: it tells jobs and configs apart, it is no secret.
std::string job_token(const LaunchEnv& env, std::string_view shared);

// Connects to the job's TCPStore at env.master_addr:env.master_port within `timeout`. Rank 0 serves it (unless
// torchrun's agent does) on a socket bound to the address master_addr resolves to, so it listens on that address only.
// A master address that does not resolve, is not this host's, is a loopback address while the job spans several nodes,
// or a port in use is an InputError naming the variable it came from.
c10::intrusive_ptr<c10d::Store> open_store(const LaunchEnv& env, std::chrono::milliseconds timeout);

// Every rank records its job (env.job and `token`) under env.rendezvous_prefix; rank 0 compares every rank's record
// with its own and publishes the verdict, which the others wait for. A rank whose record differs, or which finds its
// rank taken by a process of another job, ends every rank that saw it with an InputError naming the variables that
// differ (or the token, when only the config differs). A rank that does not arrive within the store's timeout is a
// runtime error naming it.
void check_members(c10d::Store& store, const LaunchEnv& env, const std::string& token);

}  // namespace fm::dist
