// The dist room: launcher environments (pure), and the c10d World across real processes started by torchrun.
#include <gtest/gtest.h>

#include <map>

#include "dist/launch_env.h"
#include "dist/world.h"
#include "torchrun_util.h"
#include "util/error.h"

namespace fm::test {
namespace {

using dist::LaunchEnv;
using dist::parse_launch_env;

// ---- the World across two processes (Gloo on loopback) ------------------------------------------------------------

// Runs on each rank: every collective against its closed form (rank r contributes values built from r).
TEST(DistWorker, Collectives) {
  if (!is_worker("DistWorker.Collectives")) GTEST_SKIP() << "runs under DistTorchrun.Collectives";
  auto device = dist::init_world("cpu", std::chrono::seconds(20));
  auto& w = dist::world();
  ASSERT_EQ(device, torch::Device(torch::kCPU));
  ASSERT_EQ(w.size(), 2);
  const int r = w.rank();
  EXPECT_EQ(w.local_rank(), r);

  // Mixed dtypes and a non-contiguous view: sums are 1+2 = 3 per element, and the view writes through to its base.
  auto f = torch::full({3}, r + 1.0f);
  auto i = torch::full({2, 2}, int64_t(r + 1));
  auto base = torch::zeros({4, 2}, torch::kFloat64);
  auto view = base.t();  // non-contiguous
  view.fill_(10.0 * (r + 1));
  std::vector<torch::Tensor> ts{f, i, view};
  w.all_reduce_sum(ts);
  EXPECT_TRUE(torch::equal(f, torch::full({3}, 3.0f)));
  EXPECT_TRUE(torch::equal(i, torch::full({2, 2}, int64_t(3))));
  EXPECT_TRUE(torch::equal(base, torch::full({4, 2}, 30.0, torch::kFloat64)));

  // Broadcast from rank 1: both end with rank 1's values.
  auto a = torch::arange(5, torch::kFloat32) + 100 * r;
  auto b = torch::full({1}, int64_t(7 + r));
  std::vector<torch::Tensor> bs{a, b};
  w.broadcast(bs, 1);
  EXPECT_TRUE(torch::equal(a, torch::arange(5, torch::kFloat32) + 100));
  EXPECT_EQ(b.item<int64_t>(), 8);

  // Gather of unequal lengths: rank 0 has one row of 0s, rank 1 two rows of 1s; rank order kept.
  auto rows = torch::full({r + 1, 3}, float(r));
  auto all = w.all_gather_cat(rows);
  auto want = torch::tensor({0.f, 0.f, 0.f, 1.f, 1.f, 1.f, 1.f, 1.f, 1.f}).view({3, 3});
  EXPECT_TRUE(torch::equal(all, want)) << all;
  // And a rank with no rows at all.
  auto some = w.all_gather_cat(r == 0 ? torch::empty({0, 2}) : torch::ones({2, 2}));
  EXPECT_TRUE(torch::equal(some, torch::ones({2, 2})));

  EXPECT_TRUE(w.any(r == 1));
  EXPECT_FALSE(w.any(false));
  w.barrier();
  std::printf("collectives ok on rank %d\n", r);
  std::fflush(stdout);
  dist::shutdown_world();
}

// torchrun with its agent's store (the default): every rank connects as a client.
TEST(DistTorchrun, CollectivesOnTheAgentStore) {
  auto res = torchrun_worker(2, "DistWorker.Collectives");
  EXPECT_EQ(res.code, 0) << res.output;
  EXPECT_NE(res.output.find("collectives ok on rank 0"), std::string::npos) << res.output;
  EXPECT_NE(res.output.find("collectives ok on rank 1"), std::string::npos) << res.output;
}

// Without the agent's store rank 0 serves the TCPStore itself (as under srun).
TEST(DistTorchrun, CollectivesOnRankZerosStore) {
  auto res = torchrun_worker(2, "DistWorker.Collectives", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1");
  EXPECT_EQ(res.code, 0) << res.output;
  EXPECT_NE(res.output.find("collectives ok on rank 0"), std::string::npos) << res.output;
  EXPECT_NE(res.output.find("collectives ok on rank 1"), std::string::npos) << res.output;
}

}  // namespace
}  // namespace fm::test

namespace fm::test {
namespace {

using dist::expand_slurm_nodelist;
using dist::LaunchEnv;
using dist::parse_launch_env;
using Vars = std::map<std::string, std::string>;

dist::EnvLookup lookup(const Vars& vars) {
  return [vars](const std::string& k) -> std::optional<std::string> {
    auto it = vars.find(k);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

// The InputError's message, or "" when parsing succeeds.
std::string error_of(const Vars& vars) {
  try {
    parse_launch_env(lookup(vars));
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

const Vars kTorchrun = {{"RANK", "3"},
                        {"LOCAL_RANK", "1"},
                        {"WORLD_SIZE", "4"},
                        {"LOCAL_WORLD_SIZE", "2"},
                        {"MASTER_ADDR", "node7"},
                        {"MASTER_PORT", "29400"},
                        {"TORCHELASTIC_RESTART_COUNT", "2"},
                        {"TORCHELASTIC_USE_AGENT_STORE", "True"}};

const Vars kSlurm = {{"SLURM_PROCID", "5"},   {"SLURM_NTASKS", "8"},          {"SLURM_LOCALID", "1"},
                     {"SLURM_STEP_ID", "0"},  {"SLURM_JOB_ID", "4812345"},   {"SLURM_JOB_NODELIST", "gpu[03-04,07]"}};

TEST(LaunchEnv, NoLauncherIsOneProcess) {
  LaunchEnv e = parse_launch_env(lookup({{"HOME", "/root"}}));
  EXPECT_EQ(e.launcher, "none");
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.size, 1);
  EXPECT_EQ(e.local_rank, 0);
}

TEST(LaunchEnv, Torchrun) {
  LaunchEnv e = parse_launch_env(lookup(kTorchrun));
  EXPECT_EQ(e.launcher, "torchrun");
  EXPECT_EQ(e.rank, 3);
  EXPECT_EQ(e.size, 4);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.master_addr, "node7");
  EXPECT_EQ(e.master_port, 29400);
  EXPECT_TRUE(e.agent_store);
  // Keys of restart 2 never meet those of the attempt that died.
  EXPECT_EQ(e.store_prefix, "/worker/attempt_2/fm/");

  Vars v = kTorchrun;
  v["TORCHELASTIC_USE_AGENT_STORE"] = "False";
  v.erase("TORCHELASTIC_RESTART_COUNT");
  e = parse_launch_env(lookup(v));
  EXPECT_FALSE(e.agent_store);
  EXPECT_EQ(e.store_prefix, "/worker/attempt_0/fm/");
}

TEST(LaunchEnv, TorchrunWinsOverSlurm) {
  Vars v = kSlurm;
  for (const auto& [k, val] : kTorchrun) v[k] = val;
  EXPECT_EQ(parse_launch_env(lookup(v)).launcher, "torchrun");
}

TEST(LaunchEnv, TorchrunOfOneStillMeetsAtItsStore) {
  // --nproc-per-node 1 is a job of one, but still a process group: the same path (NCCL on a GPU) as eight.
  LaunchEnv e = parse_launch_env(lookup({{"RANK", "0"}, {"LOCAL_RANK", "0"}, {"WORLD_SIZE", "1"},
                                         {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29500"}}));
  EXPECT_EQ(e.launcher, "torchrun");
  EXPECT_EQ(e.size, 1);
  EXPECT_EQ(e.master_port, 29500);
}

TEST(LaunchEnv, BadTorchrunValuesNameTheVariable) {
  auto with = [](const std::string& k, const std::string& v) {
    Vars vars = kTorchrun;
    vars[k] = v;
    return error_of(vars);
  };
  auto without = [](const std::string& k) {
    Vars vars = kTorchrun;
    vars.erase(k);
    return error_of(vars);
  };
  EXPECT_NE(with("RANK", "4").find("RANK=\"4\": must be below WORLD_SIZE=4"), std::string::npos);
  EXPECT_NE(with("RANK", "-1").find("RANK=\"-1\": not a whole number"), std::string::npos);
  EXPECT_NE(with("WORLD_SIZE", "2x").find("WORLD_SIZE=\"2x\""), std::string::npos);
  EXPECT_NE(with("WORLD_SIZE", "0").find("WORLD_SIZE=\"0\": must be in [1,"), std::string::npos);
  EXPECT_NE(with("WORLD_SIZE", "99999999999999999999").find("WORLD_SIZE"), std::string::npos);
  EXPECT_NE(with("LOCAL_RANK", "2").find("LOCAL_RANK=\"2\": must be below LOCAL_WORLD_SIZE=2"), std::string::npos);
  EXPECT_NE(with("LOCAL_WORLD_SIZE", "5").find("LOCAL_WORLD_SIZE=\"5\""), std::string::npos);
  EXPECT_NE(with("MASTER_PORT", "70000").find("MASTER_PORT=\"70000\": must be in [1, 65535]"), std::string::npos);
  EXPECT_NE(with("MASTER_ADDR", "").find("MASTER_ADDR=\"\": empty"), std::string::npos);
  EXPECT_NE(with("TORCHELASTIC_USE_AGENT_STORE", "yes").find("TORCHELASTIC_USE_AGENT_STORE=\"yes\""),
            std::string::npos);
  EXPECT_NE(with("TORCHELASTIC_RESTART_COUNT", "x").find("TORCHELASTIC_RESTART_COUNT"), std::string::npos);
  EXPECT_NE(without("WORLD_SIZE").find("WORLD_SIZE is not set"), std::string::npos);
  EXPECT_NE(without("LOCAL_RANK").find("LOCAL_RANK is not set"), std::string::npos);
  EXPECT_NE(without("MASTER_PORT").find("MASTER_PORT is not set"), std::string::npos);
  EXPECT_EQ(error_of(kTorchrun), "");
}

TEST(LaunchEnv, Slurm) {
  LaunchEnv e = parse_launch_env(lookup(kSlurm));
  EXPECT_EQ(e.launcher, "slurm");
  EXPECT_EQ(e.rank, 5);
  EXPECT_EQ(e.size, 8);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.master_addr, "gpu03");      // the list's first host
  EXPECT_EQ(e.master_port, 15000 + 2345);  // 15000 + the job id's last four digits
  EXPECT_FALSE(e.agent_store);

  Vars v = kSlurm;
  v["MASTER_ADDR"] = "10.0.0.9";
  v["MASTER_PORT"] = "23456";
  e = parse_launch_env(lookup(v));
  EXPECT_EQ(e.master_addr, "10.0.0.9");
  EXPECT_EQ(e.master_port, 23456);
}

TEST(LaunchEnv, SbatchScriptWithoutSrunIsOneProcess) {
  // The batch script itself sees SLURM_PROCID=0 and the allocation's SLURM_NTASKS, but no step.
  Vars v = kSlurm;
  v.erase("SLURM_STEP_ID");
  v["SLURM_PROCID"] = "0";
  EXPECT_EQ(parse_launch_env(lookup(v)).launcher, "none");
}

TEST(LaunchEnv, BadSlurmValuesNameTheVariable) {
  auto with = [](const std::string& k, const std::string& v) {
    Vars vars = kSlurm;
    vars[k] = v;
    return error_of(vars);
  };
  EXPECT_NE(with("SLURM_PROCID", "8").find("SLURM_PROCID=\"8\": must be below SLURM_NTASKS=8"), std::string::npos);
  EXPECT_NE(with("SLURM_NTASKS", "eight").find("SLURM_NTASKS=\"eight\""), std::string::npos);
  EXPECT_NE(with("SLURM_LOCALID", "6").find("SLURM_LOCALID=\"6\": must not exceed SLURM_PROCID=5"), std::string::npos);
  EXPECT_NE(with("SLURM_JOB_NODELIST", "gpu[03-04").find("SLURM_JOB_NODELIST"), std::string::npos);
  EXPECT_NE(with("SLURM_JOB_ID", "abc").find("SLURM_JOB_ID=\"abc\""), std::string::npos);
  Vars v = kSlurm;
  v.erase("SLURM_JOB_ID");
  EXPECT_NE(error_of(v).find("SLURM_JOB_ID is not set"), std::string::npos);
  v = kSlurm;
  v.erase("SLURM_LOCALID");
  EXPECT_NE(error_of(v).find("SLURM_LOCALID is not set"), std::string::npos);
}

TEST(SlurmNodelist, ExpandsCompressedForms) {
  using L = std::vector<std::string>;
  EXPECT_EQ(expand_slurm_nodelist("node1"), L({"node1"}));
  EXPECT_EQ(expand_slurm_nodelist("gpu[01-04,07]"), L({"gpu01", "gpu02", "gpu03", "gpu04", "gpu07"}));
  EXPECT_EQ(expand_slurm_nodelist("a[9-11],b7,c[002-003]"), L({"a9", "a10", "a11", "b7", "c002", "c003"}));
  EXPECT_EQ(expand_slurm_nodelist("r[1-2]n[0-1]"), L({"r1n0", "r1n1", "r2n0", "r2n1"}));
  EXPECT_EQ(expand_slurm_nodelist("gpu-a100-[8]"), L({"gpu-a100-8"}));
}

TEST(SlurmNodelist, MalformedListsAreInputErrors) {
  for (const std::string bad : {"", "gpu[01-04", "gpu01-04]", "gpu[]", "gpu[4-2]", "gpu[a-b]", "a,,b", "gpu[1-2[3]]",
                                "gpu[1-]", "gpu[0-999999999]"}) {
    try {
      expand_slurm_nodelist(bad);
      ADD_FAILURE() << "accepted \"" << bad << "\"";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("SLURM_JOB_NODELIST"), std::string::npos) << e.what();
    }
  }
}

TEST(SlurmNodelist, PortFromJobId) {
  EXPECT_EQ(dist::slurm_port("4812345"), 17345);
  EXPECT_EQ(dist::slurm_port("77"), 15077);
  EXPECT_EQ(dist::slurm_port("123450000"), 15000);
  EXPECT_EQ(dist::slurm_port("98761234_5"), 16234);  // an array task keeps its job's id
}

}  // namespace
}  // namespace fm::test
