// How the processes of a launched job meet (src/dist/rendezvous.h): processes of another job, step or config that
// reach the job's store are refused, every rank naming what differs.
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
#include "dist/world.h"
#include "torchrun_util.h"
#include "util/error.h"

namespace fm::test::rendezvous {
namespace {

// A TCP port nothing listens on now (bound on 127.0.0.1, read, released).
int unused_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
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
  const std::string common = "SLURM_NTASKS=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" + std::to_string(unused_port()) +
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
