// How the processes of a launched job meet (src/dist/rendezvous.h): rank 0's store listens on the master address only,
// and processes of another job, step or config that reach it are refused, every rank naming what differs.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "dist/launch_env.h"
#include "dist/process_group_world.h"
#include "dist/world.h"
#include "torchrun_util.h"
#include "util/error.h"

namespace fm::test::rendezvous {
namespace {

// A socket bound to addr:port (IPv4), listening or only connecting; -1 when that fails.
int ipv4_socket(const std::string& addr, int port, bool listen) {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, addr.c_str(), &a.sin_addr);
  const bool ok = listen ? ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(s, 4) == 0
                         : ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  if (ok) return s;
  ::close(s);
  return -1;
}

bool accepts_connections(const std::string& addr, int port) {
  const int s = ipv4_socket(addr, port, /*listen=*/false);
  if (s >= 0) ::close(s);
  return s >= 0;
}

// Rank 0 of a one-process srun step whose store is at addr:port.
dist::LaunchEnv rank_zero_at(const std::string& addr, int port) {
  std::map<std::string, std::string> vars = {{"SLURM_PROCID", "0"},      {"SLURM_NTASKS", "1"},
                                             {"SLURM_LOCALID", "0"},     {"SLURM_STEP_ID", "0"},
                                             {"SLURM_JOB_ID", "4242"},   {"MASTER_ADDR", addr},
                                             {"MASTER_PORT", std::to_string(port)}};
  return dist::parse_launch_env([vars](const std::string& k) -> std::optional<std::string> {
    auto it = vars.find(k);
    return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
  });
}

// The InputError's message when rank 0 tries to serve the store for `env`; "" when it can.
std::string serving_error(const dist::LaunchEnv& env) {
  try {
    auto w = dist::make_process_group_world(env, torch::kCPU, std::chrono::seconds(10), "token");
    w->shutdown();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(RendezvousStore, ListensOnTheMasterAddressOnly) {
  // 127.0.0.2 and 127.0.0.1 are two addresses of Linux's loopback interface: a store bound to the first must not
  // answer on the second, as a store on a cluster node's job network must not answer on its other networks.
  const int port = free_loopback_port();
  auto w = dist::make_process_group_world(rank_zero_at("127.0.0.2", port), torch::kCPU, std::chrono::seconds(10),
                                          "token");
  EXPECT_TRUE(accepts_connections("127.0.0.2", port));
  EXPECT_FALSE(accepts_connections("127.0.0.1", port)) << "the store listens on every interface";
  w->shutdown();
}

TEST(RendezvousStore, AnAddressRankZeroCannotServeIsAnInputErrorNamingIt) {
  // Not an address of this host (TEST-NET-1, reserved for documentation).
  std::string e = serving_error(rank_zero_at("192.0.2.1", free_loopback_port()));
  EXPECT_NE(e.find("MASTER_ADDR=\"192.0.2.1\""), std::string::npos) << e;
  EXPECT_NE(e.find("not an address of rank 0's host"), std::string::npos) << e;

  // Loopback, while ranks on other nodes would have to reach it.
  dist::LaunchEnv multi = rank_zero_at("127.0.0.1", free_loopback_port());
  multi.multi_node = true;
  e = serving_error(multi);
  EXPECT_NE(e.find("MASTER_ADDR=\"127.0.0.1\""), std::string::npos) << e;
  EXPECT_NE(e.find("loopback"), std::string::npos) << e;

  // A port another process listens on.
  const int port = free_loopback_port();
  const int taken = ipv4_socket("127.0.0.3", port, /*listen=*/true);
  ASSERT_GE(taken, 0);
  e = serving_error(rank_zero_at("127.0.0.3", port));
  ::close(taken);
  EXPECT_NE(e.find("port " + std::to_string(port) + " (from MASTER_PORT) on 127.0.0.3 is in use"), std::string::npos)
      << e;
}

// Runs on each rank: joins the job with FM_TEST_JOB_CONFIG as the config every rank must share; a refusal ends the
// process as fm's main does (the message on stderr, exit 2).
TEST(RendezvousWorker, Join) {
  if (!is_worker("RendezvousWorker.Join")) GTEST_SKIP() << "runs under Rendezvous.ARankWithAnotherConfigIsRefused";
  const char* config = std::getenv("FM_TEST_JOB_CONFIG");
  try {
    dist::init_world("cpu", std::chrono::seconds(30), config ? config : "");
  } catch (const InputError& e) {
    std::fprintf(stderr, "fm: error: %s\n", e.what());
    std::fflush(stderr);
    std::_Exit(2);
  }
  std::printf("joined as rank %d of %d\n", dist::world().rank(), dist::world().size());
  std::fflush(stdout);
  dist::world().barrier();
  dist::shutdown_world();
}

// `command` started twice by hand as the two ranks of an srun step (SLURM_PROCID 0 and 1, the store at 127.0.0.1 and
// a free port), rank r with its own variables `env[r]`. Prints "rank0 exit N" and "rank1 exit N", then both logs.
RunResult two_ranks(const TempDir& d, const std::string& command, const std::string& env0, const std::string& env1) {
  const std::string common = "SLURM_NTASKS=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(free_loopback_port()) +
                             " OMP_NUM_THREADS=1";
  const std::string script =
      "cd " + d.str() + "; " + common + " SLURM_PROCID=0 SLURM_LOCALID=0 " + env0 + " timeout 120 " + command +
      " > r0.log 2>&1 & p0=$!; " + common + " SLURM_PROCID=1 SLURM_LOCALID=1 " + env1 + " timeout 120 " + command +
      " > r1.log 2>&1 & p1=$!; wait $p0; echo \"rank0 exit $?\"; wait $p1; echo \"rank1 exit $?\"; " +
      "echo --- rank 0; cat r0.log; echo --- rank 1; cat r1.log";
  return run("bash -c '" + script + "'");
}

TEST(Rendezvous, RanksOfAnotherStepOrJobAreRefusedNamingTheVariables) {
  // Two ranks that reach one store (the same MASTER_ADDR and MASTER_PORT) but claim different steps, then different
  // jobs: neither trains; both exit 2, each naming the variable and both values.
  TempDir d;
  auto train = [&](const std::string& out) {
    return fm_binary() + " train --config " + source_dir() + "/configs/shapes_cpu.json --device cpu --out " + d / out +
           " --set train.steps=2 train.log_every=1 train.sample_every=0 dist.timeout_s=30";
  };
  auto steps =
      two_ranks(d, train("steps"), "SLURM_JOB_ID=4812345 SLURM_STEP_ID=0", "SLURM_JOB_ID=4812345 SLURM_STEP_ID=1");
  EXPECT_NE(steps.output.find("rank0 exit 2"), std::string::npos) << steps.output;
  EXPECT_NE(steps.output.find("rank1 exit 2"), std::string::npos) << steps.output;
  EXPECT_NE(steps.output.find("SLURM_STEP_ID=\"1\" there, \"0\" here"), std::string::npos) << steps.output;
  EXPECT_NE(steps.output.find("SLURM_STEP_ID=\"0\" there, \"1\" here"), std::string::npos) << steps.output;
  EXPECT_FALSE(std::filesystem::exists(d / "steps/metrics.jsonl")) << "no step was trained";

  auto jobs =
      two_ranks(d, train("jobs"), "SLURM_JOB_ID=4812345 SLURM_STEP_ID=0", "SLURM_JOB_ID=9912345 SLURM_STEP_ID=0");
  EXPECT_NE(jobs.output.find("rank0 exit 2"), std::string::npos) << jobs.output;
  EXPECT_NE(jobs.output.find("rank1 exit 2"), std::string::npos) << jobs.output;
  EXPECT_NE(jobs.output.find("SLURM_JOB_ID=\"9912345\" there, \"4812345\" here"), std::string::npos) << jobs.output;
  EXPECT_NE(jobs.output.find("SLURM_JOB_ID=\"4812345\" there, \"9912345\" here"), std::string::npos) << jobs.output;
  EXPECT_FALSE(std::filesystem::exists(d / "jobs/metrics.jsonl")) << "no step was trained";
}

TEST(Rendezvous, ARankWithAnotherConfigIsRefused) {
  TempDir d;
  const std::string worker = self_exe() + " --gtest_filter=RendezvousWorker.Join";
  const std::string job = "FM_DIST_WORKER=RendezvousWorker.Join SLURM_JOB_ID=77 SLURM_STEP_ID=0 ";
  auto same = two_ranks(d, worker, job + "FM_TEST_JOB_CONFIG=lr=1e-4", job + "FM_TEST_JOB_CONFIG=lr=1e-4");
  EXPECT_NE(same.output.find("rank0 exit 0"), std::string::npos) << same.output;
  EXPECT_NE(same.output.find("rank1 exit 0"), std::string::npos) << same.output;
  EXPECT_NE(same.output.find("joined as rank 1 of 2"), std::string::npos) << same.output;

  auto other = two_ranks(d, worker, job + "FM_TEST_JOB_CONFIG=lr=1e-4", job + "FM_TEST_JOB_CONFIG=lr=2e-4");
  EXPECT_NE(other.output.find("rank0 exit 2"), std::string::npos) << other.output;
  EXPECT_NE(other.output.find("rank1 exit 2"), std::string::npos) << other.output;
  EXPECT_NE(other.output.find("rank 0 of 2: rank 1 at the store 127.0.0.1:"), std::string::npos) << other.output;
  EXPECT_NE(other.output.find("rank 1 of 2: rank 0 at the store 127.0.0.1:"), std::string::npos) << other.output;
  EXPECT_NE(other.output.find("its job token differs while its job variables agree"), std::string::npos)
      << other.output;
  EXPECT_EQ(other.output.find("joined as rank"), std::string::npos) << other.output;
}

}  // namespace
}  // namespace fm::test::rendezvous
