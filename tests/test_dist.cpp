// The dist room: launcher environments (pure), and the c10d World across real processes started by torchrun.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_dir.h"
#include "dist/launch_env.h"
#include "dist/world.h"
#include "io/npy.h"
#include "nn/velocity_field.h"
#include "train/forward_rng.h"
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
                        {"TORCHELASTIC_RUN_ID", "run7"},
                        {"TORCHELASTIC_USE_AGENT_STORE", "True"}};

const Vars kSlurm = {{"SLURM_PROCID", "5"},   {"SLURM_NTASKS", "8"},          {"SLURM_LOCALID", "1"},
                     {"SLURM_STEP_ID", "0"},  {"SLURM_JOB_ID", "4812345"},   {"SLURM_JOB_NODELIST", "gpu[03-04,07]"}};
// A step of the same job on part of its allocation, as srun describes it to each task.
const Vars kSlurmStep = [] {
  Vars v = kSlurm;
  v["SLURM_STEP_ID"] = "3";
  v["SLURM_STEP_NODELIST"] = "gpu[04,07]";
  return v;
}();

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
  EXPECT_TRUE(e.multi_node) << "4 ranks, 2 on each node";
  // Keys of restart 2 never meet those of the attempt that died, nor those of another run at the same store.
  EXPECT_EQ(e.store_prefix, "/worker/attempt_2/fm/run_run7/");
  EXPECT_EQ(e.rendezvous_prefix, "/worker/attempt_2/fm/rendezvous/");
  using Job = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(e.job, (Job{{"TORCHELASTIC_RUN_ID", "run7"}, {"TORCHELASTIC_RESTART_COUNT", "2"}, {"WORLD_SIZE", "4"}}));

  Vars v = kTorchrun;
  v["TORCHELASTIC_USE_AGENT_STORE"] = "False";
  v["LOCAL_WORLD_SIZE"] = "4";
  v.erase("TORCHELASTIC_RESTART_COUNT");
  e = parse_launch_env(lookup(v));
  EXPECT_FALSE(e.agent_store);
  EXPECT_FALSE(e.multi_node);
  EXPECT_EQ(e.store_prefix, "/worker/attempt_0/fm/run_run7/");
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
  EXPECT_EQ(e.master_port, 15000 + 2345);  // 15000 + the job id's last four digits (step 0)
  EXPECT_FALSE(e.agent_store);
  EXPECT_TRUE(e.multi_node);
  EXPECT_EQ(e.store_prefix, "/fm/job_4812345/step_0/");

  Vars v = kSlurm;
  v["MASTER_ADDR"] = "10.0.0.9";
  v["MASTER_PORT"] = "23456";
  e = parse_launch_env(lookup(v));
  EXPECT_EQ(e.master_addr, "10.0.0.9");
  EXPECT_EQ(e.master_port, 23456);
}

TEST(LaunchEnv, SlurmStepMeetsOnItsFirstHostAtItsOwnPortUnderItsOwnPrefix) {
  // A step on part of the allocation: rank 0 is the first host of the step's list, not of the job's.
  LaunchEnv e = parse_launch_env(lookup(kSlurmStep));
  EXPECT_EQ(e.master_addr, "gpu04");
  EXPECT_EQ(e.master_addr_from, "SLURM_STEP_NODELIST");
  EXPECT_EQ(e.master_port, 15000 + (2345 + 7919 * 3) % 10000);
  EXPECT_EQ(e.store_prefix, "/fm/job_4812345/step_3/");
  EXPECT_EQ(e.rendezvous_prefix, "/fm/rendezvous/");
  using Job = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(e.job, (Job{{"SLURM_JOB_ID", "4812345"}, {"SLURM_STEP_ID", "3"}, {"SLURM_NTASKS", "8"}}));
  EXPECT_TRUE(e.multi_node);

  // Two steps of one job (each on the job's first node) meet at different ports under different prefixes.
  Vars step0 = kSlurm, step1 = kSlurm;
  step1["SLURM_STEP_ID"] = "1";
  LaunchEnv a = parse_launch_env(lookup(step0)), b = parse_launch_env(lookup(step1));
  EXPECT_EQ(a.master_addr, b.master_addr);
  EXPECT_NE(a.master_port, b.master_port);
  EXPECT_NE(a.store_prefix, b.store_prefix);
  EXPECT_NE(a.job, b.job);

  // Two jobs whose ids share their last four digits share a port on a shared first node, but not a prefix, and the
  // rendezvous tells their ranks apart.
  Vars other = kSlurm;
  other["SLURM_JOB_ID"] = "9912345";
  LaunchEnv c = parse_launch_env(lookup(other));
  EXPECT_EQ(c.master_port, a.master_port);
  EXPECT_NE(c.store_prefix, a.store_prefix);
  EXPECT_EQ(c.rendezvous_prefix, a.rendezvous_prefix) << "where the ranks of both meet and are refused";
  EXPECT_NE(c.job, a.job);

  // One node: no other node needs to reach rank 0's store.
  Vars one = kSlurmStep;
  one["SLURM_STEP_NODELIST"] = "gpu07";
  EXPECT_FALSE(parse_launch_env(lookup(one)).multi_node);
  // MASTER_ADDR and MASTER_PORT, when set, still win.
  one["MASTER_ADDR"] = "10.0.0.9";
  one["MASTER_PORT"] = "23456";
  e = parse_launch_env(lookup(one));
  EXPECT_EQ(e.master_addr, "10.0.0.9");
  EXPECT_EQ(e.master_port, 23456);
  EXPECT_EQ(e.master_port_from, "MASTER_PORT");
  EXPECT_EQ(e.store_prefix, "/fm/job_4812345/step_3/");

  auto with = [](const std::string& k, const std::string& v) {
    Vars vars = kSlurmStep;
    vars[k] = v;
    return error_of(vars);
  };
  EXPECT_NE(with("SLURM_STEP_ID", "x").find("SLURM_STEP_ID=\"x\""), std::string::npos);
  EXPECT_NE(with("SLURM_STEP_NODELIST", "gpu[04").find("SLURM_STEP_NODELIST"), std::string::npos);
  Vars none = kSlurmStep;
  none.erase("SLURM_STEP_NODELIST");
  none.erase("SLURM_JOB_NODELIST");
  EXPECT_NE(error_of(none).find("SLURM_STEP_NODELIST is not set"), std::string::npos) << error_of(none);
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

TEST(SlurmNodelist, PortFromJobAndStepIds) {
  // Step 0: 15000 + the job id's last four digits.
  EXPECT_EQ(dist::slurm_port("4812345", "0"), 17345);
  EXPECT_EQ(dist::slurm_port("77", "0"), 15077);
  EXPECT_EQ(dist::slurm_port("123450000", "0"), 15000);
  EXPECT_EQ(dist::slurm_port("98761234_5", "0"), 16234);  // an array task keeps its job's id
  // Step s adds 7919 s, modulo 10000.
  EXPECT_EQ(dist::slurm_port("4812345", "1"), 15000 + (2345 + 7919) % 10000);
  EXPECT_EQ(dist::slurm_port("4812345", "4294967294"), 15000 + (2345 + 7919 * 7294) % 10000);
  std::set<int> ports;
  for (int step = 0; step < 10000; ++step) ports.insert(dist::slurm_port("4812345", std::to_string(step)));
  EXPECT_EQ(ports.size(), 10000u) << "the first 10000 steps of a job all get ports of their own";
  for (int step = 0; step < 20; ++step)
    for (const char* next : {"4812346", "4812344"})
      EXPECT_NE(dist::slurm_port("4812345", std::to_string(step)), dist::slurm_port(next, "0"))
          << "step " << step << " of a job and step 0 of its neighbour " << next;
  EXPECT_THROW(dist::slurm_port("4812345", "x"), InputError);
  EXPECT_THROW(dist::slurm_port("4812345", "4294967296"), InputError);
}

}  // namespace
}  // namespace fm::test

// ---- training across ranks: fm train under torchrun ----------------------------------------------------------------

namespace fm::test {
namespace {

// A tiny class-conditional U-Net on 16x16 shapes; dropout 0 so that two ranks can match one process row for row.
std::string write_tiny_config(const TempDir& d, int64_t steps, double dropout = 0.0) {
  nlohmann::json c = {
      {"seed", 3},
      {"device", "cpu"},
      {"data", {{"format", "shapes"}, {"path", "64"}, {"resolution", 16}}},
      {"model",
       {{"type", "unet"},
        {"unet",
         {{"model_channels", 32}, {"num_res_blocks", 1}, {"channel_mult", {1, 2}}, {"attention_resolutions", {8}},
          {"num_heads", 1}, {"num_head_channels", -1}, {"dropout", dropout}, {"num_classes", 3}}}}},
      {"train",
       {{"steps", steps}, {"batch_size", 8}, {"lr", 2e-3}, {"log_every", 1}, {"ckpt_every", 2}, {"keep_last", 10},
        {"tensorboard", false}}},
      {"sample", {{"steps", 2}, {"n", 16}}},
      {"dist", {{"timeout_s", 5}}}};
  std::string path = d / "tiny.json";
  std::ofstream(path) << c.dump(2);
  return path;
}

std::vector<torch::Tensor> model_weights(const std::string& ckpt) {
  CheckpointReader r(ckpt, torch::kCPU);
  auto m = make_velocity_field(r.config().model, r.config().path, r.sample_shape());
  r.load_module("model", *m);
  return m->parameters();
}

std::vector<nlohmann::json> metrics_of(const std::string& run) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(run + "/metrics.jsonl");
  for (std::string l; std::getline(in, l);) lines.push_back(nlohmann::json::parse(l));
  return lines;
}

// Two runs' weights agree to float tolerance. The sums over the batch run in another order on two ranks, and Adam
// divides each gradient by its own running scale, so a weight whose gradient is nearly zero can move by up to about lr
// the other way: the check is that almost every weight agrees to 1e-5 and none is off by more than a step of lr.
void expect_close_weights(const std::string& a, const std::string& b, double max_fraction_off = 0.01, double lr = 2e-3) {
  auto wa = model_weights(a), wb = model_weights(b);
  ASSERT_EQ(wa.size(), wb.size());
  int64_t off = 0, total = 0;
  for (size_t i = 0; i < wa.size(); ++i) {
    auto diff = (wa[i] - wb[i]).abs();
    off += (diff > 1e-5).sum().item<int64_t>();
    total += diff.numel();
    EXPECT_LE(diff.max().item<double>(), lr) << "parameter " << i;
  }
  EXPECT_LT(static_cast<double>(off) / total, max_fraction_off) << off << " of " << total << " weights differ by more than 1e-5";
}

std::string ckpt(const std::string& run, int step) {
  char name[64];
  std::snprintf(name, sizeof name, "/checkpoints/ckpt_%09d.pt", step);
  return run + name;
}

TEST(DistTrain, TwoRanksTrainAsOneProcessOnTheSameGlobalBatches) {
  TempDir d;
  auto cfg = write_tiny_config(d, 4);
  auto one = run(fm_binary() + " train --config " + cfg + " --out " + d / "one");
  ASSERT_EQ(one.code, 0) << one.output;
  auto two = torchrun(2, fm_binary() + " train --config " + cfg + " --out " + d / "two");
  ASSERT_EQ(two.code, 0) << two.output;
  // Each step every rank compares a checksum of its weights with the others' (log_every 1): a divergence would have
  // failed the run. Rank 0 alone wrote the run directory and logged.
  EXPECT_EQ(two.output.find("weights differ"), std::string::npos) << two.output;
  EXPECT_NE(two.output.find("2 processes, 4 rows of each global batch of 8"), std::string::npos) << two.output;
  auto m1 = metrics_of(d / "one"), m2 = metrics_of(d / "two");
  ASSERT_EQ(m1.size(), 4u);
  ASSERT_EQ(m2.size(), 4u) << "rank 1 must not write metrics too";
  for (size_t s = 0; s < 4; ++s) {
    EXPECT_EQ(m2[s]["world_size"], 2);
    EXPECT_NEAR(m2[s]["loss"].get<double>(), m1[s]["loss"].get<double>(), 1e-5 * m1[s]["loss"].get<double>());
    // The averaged gradient, not the sum nor one rank's own: its norm is the one-process norm.
    EXPECT_NEAR(m2[s]["grad_norm"].get<double>(), m1[s]["grad_norm"].get<double>(),
                1e-4 * m1[s]["grad_norm"].get<double>());
    const double c1 = m1[s]["param_checksum"], c2 = m2[s]["param_checksum"];
    EXPECT_NEAR(c2, c1, 1e-5 * std::abs(c1) + 1e-4) << "step " << s + 1;
  }
  expect_close_weights(ckpt(d / "one", 2), ckpt(d / "two", 2));
  expect_close_weights(ckpt(d / "one", 4), ckpt(d / "two", 4));
}

// The pairs coupling shards each global batch of pairs over the ranks as it does data and fresh noise: two ranks train
// as one process, step for step.
TEST(DistTrain, PairsCouplingOnTwoRanksTrainsAsOneProcess) {
  TempDir d;
  torch::manual_seed(5);
  auto x0 = torch::randn({64, 2});
  std::filesystem::create_directories(d / "pairs");
  fm::write_npz(d / "pairs/pairs.npz", {{"x0", x0}, {"x1", 0.5 * x0.flip(1) + 1.0}});
  nlohmann::json c = {
      {"seed", 3},
      {"device", "cpu"},
      {"data", {{"format", "pairs"}, {"path", d / "pairs"}}},
      {"model", {{"type", "mlp"}, {"mlp", {{"hidden", 32}, {"depth", 2}}}}},
      {"path", {{"type", "cond_ot"}, {"coupling", "pairs"}}},
      {"time", {{"sampler", "u_shaped"}}},
      {"loss", {{"type", "pseudo_huber"}}},
      {"train",
       {{"steps", 4}, {"batch_size", 8}, {"lr", 2e-3}, {"log_every", 1}, {"ckpt_every", 2}, {"keep_last", 10},
        {"tensorboard", false}}},
      {"sample", {{"steps", 2}, {"n", 16}}},
      {"dist", {{"timeout_s", 5}}}};
  const std::string cfg = d / "pairs.json";
  std::ofstream(cfg) << c.dump(2);
  auto one = run(fm_binary() + " train --config " + cfg + " --out " + d / "one");
  ASSERT_EQ(one.code, 0) << one.output;
  auto two = torchrun(2, fm_binary() + " train --config " + cfg + " --out " + d / "two");
  ASSERT_EQ(two.code, 0) << two.output;
  EXPECT_EQ(two.output.find("weights differ"), std::string::npos) << two.output;
  auto m1 = metrics_of(d / "one"), m2 = metrics_of(d / "two");
  ASSERT_EQ(m1.size(), 4u);
  ASSERT_EQ(m2.size(), 4u);
  for (size_t s = 0; s < 4; ++s) {
    EXPECT_EQ(m2[s]["world_size"], 2);
    EXPECT_NEAR(m2[s]["loss"].get<double>(), m1[s]["loss"].get<double>(), 1e-5 * m1[s]["loss"].get<double>());
    EXPECT_NEAR(m2[s]["grad_norm"].get<double>(), m1[s]["grad_norm"].get<double>(),
                1e-4 * m1[s]["grad_norm"].get<double>());
  }
  expect_close_weights(ckpt(d / "one", 4), ckpt(d / "two", 4));
}

// MeanFlow's objective draws its (r, t), noise and label dropout for the whole global batch and takes the
// Jacobian-vector product on each rank's rows: two ranks train as one process.
TEST(DistTrain, MeanFlowTwoRanksTrainAsOneProcess) {
  TempDir d;
  auto cfg = write_tiny_config(d, 2);
  const std::string mf = " --set objective.type=meanflow model.unet.second_time=true sample.solver=meanflow "
                         "sample.steps=1";
  auto one = run(fm_binary() + " train --config " + cfg + mf + " --out " + d / "one");
  ASSERT_EQ(one.code, 0) << one.output;
  auto two = torchrun(2, fm_binary() + " train --config " + cfg + mf + " --out " + d / "two");
  ASSERT_EQ(two.code, 0) << two.output;
  EXPECT_EQ(two.output.find("weights differ"), std::string::npos) << two.output;
  auto m1 = metrics_of(d / "one"), m2 = metrics_of(d / "two");
  ASSERT_EQ(m1.size(), 2u);
  ASSERT_EQ(m2.size(), 2u);
  for (size_t s = 0; s < 2; ++s) {
    EXPECT_NEAR(m2[s]["loss"].get<double>(), m1[s]["loss"].get<double>(), 1e-5 * m1[s]["loss"].get<double>());
    EXPECT_NEAR(m2[s]["grad_norm"].get<double>(), m1[s]["grad_norm"].get<double>(),
                1e-4 * m1[s]["grad_norm"].get<double>());
  }
  expect_close_weights(ckpt(d / "one", 2), ckpt(d / "two", 2));
}

TEST(DistTrain, ResumeWithAnotherWorldSizeContinuesTheSameRun) {
  // The training stream is drawn for the whole global batch on every rank, so it does not depend on the world size:
  // 2 ranks to step 2, then 1 process to step 3, then 2 ranks to step 4 ends where one process straight to 4 ends.
  // (A resume that lost its place, drawing other batches, noise or times, would move nearly every weight apart.)
  TempDir d;
  auto cfg = write_tiny_config(d, 4, /*dropout=*/0.0);
  auto straight = run(fm_binary() + " train --config " + cfg + " --out " + d / "straight");
  ASSERT_EQ(straight.code, 0) << straight.output;
  auto a = torchrun(2, fm_binary() + " train --config " + cfg + " --out " + d / "mixed --stop-after 2");
  ASSERT_EQ(a.code, 0) << a.output;
  auto b = run(fm_binary() + " train --config " + cfg + " --out " + d / "mixed --stop-after 3 --resume auto");
  ASSERT_EQ(b.code, 0) << b.output;
  auto c = torchrun(2, fm_binary() + " train --config " + cfg + " --out " + d / "mixed --resume auto");
  ASSERT_EQ(c.code, 0) << c.output;
  expect_close_weights(ckpt(d / "straight", 4), ckpt(d / "mixed", 4), 0.02);
  // The metrics of the resumed parts continue the straight run's losses.
  auto ms = metrics_of(d / "straight"), mm = metrics_of(d / "mixed");
  ASSERT_EQ(mm.size(), 4u);
  for (size_t s = 0; s < 4; ++s)
    EXPECT_NEAR(mm[s]["loss"].get<double>(), ms[s]["loss"].get<double>(), 1e-4 * ms[s]["loss"].get<double>());
}

TEST(DistTrain, AGlobalBatchTheRanksCannotShareIsAConfigError) {
  TempDir d;
  auto cfg = write_tiny_config(d, 2);
  auto r = torchrun(3, fm_binary() + " train --config " + cfg + " --out " + d / "run");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("train.batch_size: 8 is not a multiple of the 3 processes"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(d / "run/checkpoints"));
}

TEST(ForwardRng, EachRankDrawsItsOwnMasksAndTheTrainingStreamMovesOnAsWithout) {
  torch::manual_seed(11);
  torch::rand({4});
  auto expected_next = torch::rand({4});  // the stream's second draw, without any scope between
  torch::manual_seed(11);
  torch::rand({4});
  torch::Tensor mask0, mask1, mask0_again;
  {
    ForwardRngScope s(torch::kCPU, 11, 7, 0);
    mask0 = torch::rand({1000}) < 0.5;
  }
  {
    ForwardRngScope s(torch::kCPU, 11, 7, 1);
    mask1 = torch::rand({1000}) < 0.5;
  }
  {
    ForwardRngScope s(torch::kCPU, 11, 7, 0);
    mask0_again = torch::rand({1000}) < 0.5;
  }
  EXPECT_TRUE(torch::equal(torch::rand({4}), expected_next)) << "the scope must leave the outer stream as it was";
  EXPECT_TRUE(torch::equal(mask0, mask0_again)) << "same (seed, step, rank), same masks: resumes stay exact";
  // Independent masks agree on about half the entries; identical ones on all.
  double agree = (mask0 == mask1).to(torch::kFloat64).mean().item<double>();
  EXPECT_GT(agree, 0.4);
  EXPECT_LT(agree, 0.6);
}

TEST(DistTrain, WithDropoutTheRanksStayEqual) {
  // Each rank's forward pass draws its own dropout masks; the weights still agree on every rank after every step
  // (the trainer compares checksums each step and fails the run otherwise).
  TempDir d;
  auto cfg = write_tiny_config(d, 4, /*dropout=*/0.3);
  auto two = torchrun(2, fm_binary() + " train --config " + cfg + " --out " + d / "two");
  ASSERT_EQ(two.code, 0) << two.output;
  EXPECT_EQ(metrics_of(d / "two").size(), 4u);
}

// Two ranks started by hand as srun would (no agent that could end the survivor first): once training runs, rank 1
// gets `sig`; rank 0 must end on its own with a clear error within dist.timeout_s (5 s). Prints rank 0's exit status
// and the seconds it took after the signal. On CUDA both ranks may share one GPU: NCCL refuses two ranks on one GPU of
// one host, so each rank names a host of its own (NCCL_HOSTID) and they talk over sockets on loopback.
RunResult lose_rank_one(const TempDir& d, const std::string& sig, const std::string& device = "cpu") {
  auto cfg = write_tiny_config(d, 100000);
  const std::string env = "SLURM_NTASKS=2 SLURM_STEP_ID=0 SLURM_JOB_ID=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
                          std::to_string(free_loopback_port()) + " OMP_NUM_THREADS=1 NCCL_SOCKET_IFNAME=lo NCCL_IB_DISABLE=1";
  const std::string train = fm_binary() + " train --config " + cfg + " --device " + device + " --out " + d / "run";
  std::string script = "cd " + d.str() + "; " + env + " SLURM_PROCID=0 SLURM_LOCALID=0 NCCL_HOSTID=fm-test-rank0 " +
                       train + " > r0.log 2>&1 & p0=$!; " + env +
                       " SLURM_PROCID=1 SLURM_LOCALID=1 NCCL_HOSTID=fm-test-rank1 " + train +
                       " > r1.log 2>&1 & p1=$!; " +
                       "for i in $(seq 1200); do [ -s run/metrics.jsonl ] && break; sleep 0.1; done; " +
                       "kill -" + sig + " $p1; t0=$(date +%s.%N); wait $p0; rc=$?; t1=$(date +%s.%N); " +
                       "kill -KILL $p1 2>/dev/null; kill -CONT $p1 2>/dev/null; wait $p1 2>/dev/null; " +
                       "echo \"rank0 exit $rc after $(awk \"BEGIN{print $t1 - $t0}\") s\"; cat r0.log";
  return run("bash -c '" + script + "'");
}

double seconds_in(const std::string& out) {
  auto at = out.find(" after ");
  return at == std::string::npos ? -1.0 : std::stod(out.substr(at + 7));
}

TEST(DistTrain, AKilledRankEndsTheOtherWithAClearError) {
  TempDir d;
  auto r = lose_rank_one(d, "KILL");
  EXPECT_NE(r.output.find("rank0 exit 1 "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("another rank exited, was stopped or did not answer within dist.timeout_s=5 s"),
            std::string::npos)
      << r.output;
  // A lost connection is seen at once; the bound only says "not a hang" (timeout 5 s, plus slack for a busy machine).
  EXPECT_LT(seconds_in(r.output), 30.0) << r.output;
}

TEST(DistTrain, AStoppedRankEndsTheOtherWithinTheTimeout) {
  TempDir d;
  auto r = lose_rank_one(d, "STOP");
  EXPECT_NE(r.output.find("rank0 exit 1 "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("another rank exited, was stopped or did not answer within dist.timeout_s=5 s"),
            std::string::npos)
      << r.output;
  EXPECT_LT(seconds_in(r.output), 30.0) << r.output;
}

// The same on NCCL: the survivor, waiting on a collective, ends within dist.timeout_s with the line Gloo gives, not in
// a device sync that only NCCL's watchdog ends (SIGABRT, a message of its own). Runs where the suite runs on CUDA
// (FM_TEST_DEVICE=cuda, as scripts/gpu_check.sh runs it); scripts/nccl_check.sh checks the same under torchrun.
TEST(DistNccl, AStoppedRankEndsTheOtherWithinTheTimeout) {
  if (!on_cuda()) GTEST_SKIP() << "needs CUDA (FM_TEST_DEVICE=cuda)";
  TempDir d;
  auto r = lose_rank_one(d, "STOP", "cuda");
  EXPECT_NE(r.output.find("rank0 exit 1 "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("rank 0 of 2: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("another rank exited, was stopped or did not answer within dist.timeout_s=5 s"),
            std::string::npos)
      << r.output;
  EXPECT_LT(seconds_in(r.output), 30.0) << r.output;
}

TEST(DistTrain, ASignalOnOneRankStopsAllAtOneStepWithOneCheckpoint) {
  TempDir d;
  auto cfg = write_tiny_config(d, 100000);
  // torchrun in the background; rank 1 (found by its RANK variable) gets SIGTERM once training runs.
  std::string script = "cd " + d.str() + "; OMP_NUM_THREADS=1 " + torchrun_exe() +
                       " --no-python --standalone --nproc-per-node 2 " + fm_binary() + " train --config " + cfg +
                       " --out run --set train.ckpt_every=100000 > tr.log 2>&1 & tr=$!; " +
                       "for i in $(seq 600); do [ -s run/metrics.jsonl ] && break; sleep 0.1; done; " +
                       "for p in $(pgrep -P $tr); do grep -qz \"^RANK=1$\" /proc/$p/environ && kill -TERM $p; done; " +
                       "wait $tr; echo \"torchrun exit $?\"; cat tr.log";
  auto r = run("bash -c '" + script + "'");
  // Both ranks leave with 75 (torchrun itself reports the failure of its workers with exit 1).
  EXPECT_EQ(occurrences(r.output, "stopped by signal 15 with its state saved"), 2u) << r.output;
  EXPECT_EQ(occurrences(r.output, "exitcode  : 75"), 2u) << r.output;
  // One checkpoint, of the step both stopped at; the metrics end there too.
  auto cks = list_checkpoints(d / "run/checkpoints");
  ASSERT_EQ(cks.size(), 1u) << r.output;
  auto m = metrics_of(d / "run");
  ASSERT_FALSE(m.empty());
  EXPECT_EQ(cks.begin()->first, m.back()["step"].get<int64_t>());
}

// Ctrl-C at a terminal sends SIGINT to torchrun and its workers at once, and torchrun's agent follows it with SIGTERM to
// every worker: the stop must survive the second signal and still write its checkpoint.
TEST(DistTrain, CtrlCUnderTorchrunStopsWithOneCheckpoint) {
  TempDir d;
  auto cfg = write_tiny_config(d, 100000);
  // set -m: torchrun and its workers in a process group of their own, which the SIGINT goes to, as a terminal's does.
  std::string script = "set -m; cd " + d.str() + "; OMP_NUM_THREADS=1 " + torchrun_exe() +
                       " --no-python --standalone --nproc-per-node 2 " + fm_binary() + " train --config " + cfg +
                       " --out run --set train.ckpt_every=100000 > tr.log 2>&1 & tr=$!; " +
                       "for i in $(seq 600); do [ -s run/metrics.jsonl ] && break; sleep 0.1; done; " +
                       "kill -INT -$tr; wait $tr; echo \"torchrun exit $?\"; cat tr.log";
  auto r = run("bash -c '" + script + "'");
  EXPECT_EQ(occurrences(r.output, "with its state saved"), 2u) << r.output;
  auto cks = list_checkpoints(d / "run/checkpoints");
  ASSERT_EQ(cks.size(), 1u) << r.output;
  auto m = metrics_of(d / "run");
  ASSERT_FALSE(m.empty());
  EXPECT_GE(cks.begin()->first, m.back()["step"].get<int64_t>());
}

// train.cuda_graph is left off in any rank of a launched job, even a job of one: the gradient reducer's hooks and
// collectives run from the host while backward runs, which a captured graph would freeze.
TEST(DistTrain, CudaGraphIsOffInALaunchedJobEvenOfOneRank) {
  TempDir d;
  auto cfg = write_tiny_config(d, 4);
  auto r = torchrun(1, fm_binary() + " train --config " + cfg + " --out " + d / "run" + " --set train.cuda_graph=true");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("train.cuda_graph: a rank of a launched job (1 process)"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace fm::test
