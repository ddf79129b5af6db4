// Fault injection on the fm binary: signals and kill -9 at a random step of a running `fm train`, then --resume auto,
// must give exactly the parameters of an uninterrupted run; a diverging run must stop without writing a bad checkpoint.
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "checkpoint/checkpoint.h"
#include "nn/velocity_field.h"
#include "checkpoint_weights.h"
#include "io/npy.h"
#include "test_util.h"
#include "checkpoint/checkpointer.h"
#include "train/nonfinite_guard.h"
#include "util/preemption.h"

using fm::test::run;
using fm::test::TempDir;

namespace {

using fm::test::checkpoint_weights;

constexpr int64_t kSteps = 600;

// A tiny 2-D run, long enough (a few seconds) that a signal lands mid-run. `extra` continues the --set list, or starts
// with another option.
std::string train_cmd(const std::string& out, const std::string& extra = "") {
  return fm::test::fm_binary() + " train --config " + fm::test::source_dir() +
         "/configs/toy2d.json --set device=cpu model.mlp.hidden=32 model.mlp.depth=2 train.batch_size=64 "
         "train.steps=" + std::to_string(kSteps) + " train.log_every=10 train.ckpt_every=50 train.keep_last=2 "
         "sample.n=100 sample.steps=2 " + extra + " --out " + out;
}

// Starts the run in the background, waits until its metrics file has `lines` lines (so the loop is running and the
// step is random to within the polling), sends `sig`, and returns the run's exit status.
int interrupt_at(const std::string& cmd, const std::string& out, int lines, const std::string& sig) {
  const std::string metrics = out + "/metrics.jsonl";
  auto r = fm::test::run_stdout(
      "(" + cmd + " >>" + out + ".log 2>&1 & pid=$!; "
      "while kill -0 $pid 2>/dev/null && { [ ! -f " + metrics + " ] || [ $(wc -l < " + metrics + ") -lt " +
      std::to_string(lines) + " ]; }; do sleep 0.01; done; kill -" + sig + " $pid; wait $pid; echo rc=$?)");
  auto at = r.output.rfind("rc=");
  return at == std::string::npos ? -1 : std::stoi(r.output.substr(at + 3));
}

void expect_same_weights(const std::string& a, const std::string& b) {
  for (const char* key : {"model", "ema"}) {
    auto x = checkpoint_weights(a, key), y = checkpoint_weights(b, key);
    ASSERT_EQ(x.size(), y.size());
    for (size_t i = 0; i < x.size(); ++i) EXPECT_TRUE(torch::equal(x[i], y[i])) << key << " parameter " << i;
  }
}

std::string final_ckpt(const std::string& out) {
  char name[64];
  std::snprintf(name, sizeof name, "/checkpoints/ckpt_%09lld.pt", static_cast<long long>(kSteps));
  return out + name;
}

int random_lines() {
  std::random_device rd;
  return std::uniform_int_distribution<int>(2, kSteps / 10 / 2)(rd);  // somewhere in the first half
}

}  // namespace

// The first signal only records itself (the loop saves and exits 75); a second one, from an impatient person or a
// scheduler's follow-up, ends the process at once with the shell's 128 + signal.
// A launcher's follow-up signal within the grace period leaves the stop under way (and its first signal) as it was.
TEST(Preemption, ASecondSignalWithinTheGraceIsIgnored) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        fm::install_stop_handlers();
        std::raise(SIGINT);
        std::raise(SIGTERM);
        std::_Exit(fm::stop_requested() && fm::stop_signal() == SIGINT ? 7 : 3);
      },
      testing::ExitedWithCode(7), "");
}

// A repeat after the grace period ends the process at once.
TEST(Preemption, ARepeatAfterTheGraceExitsAtOnce) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        fm::install_stop_handlers();
        std::raise(SIGTERM);
        if (!fm::stop_requested() || fm::stop_signal() != SIGTERM) std::_Exit(3);
        std::this_thread::sleep_for(std::chrono::duration<double>(fm::kStopGraceSeconds + 0.2));
        std::raise(SIGUSR1);
        std::_Exit(4);  // still here: the repeat was swallowed
      },
      testing::ExitedWithCode(128 + SIGUSR1), "");
}

TEST(Preemption, HelpNamesTheExitStatuses) {
  auto h = run(fm::test::fm_binary() + " train --help");
  EXPECT_EQ(h.code, 0);
  EXPECT_NE(h.output.find("75 stopped by SIGTERM"), std::string::npos) << h.output;
  EXPECT_NE(h.output.find("max_nonfinite_steps"), std::string::npos) << h.output;
}

TEST(Preemption, SignalsCheckpointExitResumableAndResumeExactly) {
  TempDir d;
  ASSERT_EQ(run(train_cmd(d / "straight")).code, 0);
  for (const std::string sig : {"TERM", "USR1"}) {
    const std::string out = d / ("run_" + sig);
    const int lines = random_lines();
    EXPECT_EQ(interrupt_at(train_cmd(out), out, lines, sig), 75) << "SIG" << sig << " after " << lines << " lines";
    // The checkpoint of the interrupted step is there, before the end.
    auto ck = fm::latest_checkpoint(out + "/checkpoints");
    ASSERT_TRUE(ck.has_value());
    const int64_t stopped = fm::CheckpointReader(*ck, torch::kCPU).step();
    EXPECT_GE(stopped, lines * 10);
    EXPECT_LT(stopped, kSteps);
    RecordProperty("stopped_at_step_" + sig, std::to_string(stopped));
    auto r = run(train_cmd(out, "--resume auto"));
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
    expect_same_weights(final_ckpt(d / "straight"), final_ckpt(out));
  }
}

// The pairs coupling (fm reflow's pairs as data, U-shaped times, the pseudo-Huber loss): the pairs are drawn in the
// sampler's epoch permutation, whose place a SIGTERM checkpoint keeps, so the resumed run ends on the same weights.
TEST(Preemption, PairsCouplingResumesExactlyAfterSigterm) {
  TempDir d;
  torch::manual_seed(5);
  auto x0 = torch::randn({1000, 2});
  std::filesystem::create_directories(d / "pairs");
  fm::write_npz(d / "pairs/pairs.npz", {{"x0", x0}, {"x1", 0.5 * x0.flip(1) + 1.0}});
  const std::string pairs = "data.format=pairs data.path=" + (d / "pairs") +
                            " path.coupling=pairs time.sampler=u_shaped loss.type=pseudo_huber";
  ASSERT_EQ(run(train_cmd(d / "straight", pairs)).code, 0);
  const std::string out = d / "run";
  const int lines = random_lines();
  EXPECT_EQ(interrupt_at(train_cmd(out, pairs), out, lines, "TERM"), 75) << "SIGTERM after " << lines << " lines";
  auto ck = fm::latest_checkpoint(out + "/checkpoints");
  ASSERT_TRUE(ck.has_value());
  EXPECT_LT(fm::CheckpointReader(*ck, torch::kCPU).step(), kSteps);
  auto r = run(train_cmd(out, pairs + " --resume auto"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
  expect_same_weights(final_ckpt(d / "straight"), final_ckpt(out));
}

// MeanFlow's step (its (r, t) draws, the Jacobian-vector product of its target) resumes as exactly as flow matching's.
TEST(Preemption, MeanFlowSigtermThenResumeIsExact) {
  TempDir d;
  const std::string mf = "objective.type=meanflow model.mlp.second_time=true sample.solver=meanflow sample.steps=1";
  ASSERT_EQ(run(train_cmd(d / "straight", mf)).code, 0);
  const std::string out = d / "run";
  const int lines = random_lines();
  EXPECT_EQ(interrupt_at(train_cmd(out, mf), out, lines, "TERM"), 75) << "after " << lines << " lines";
  auto ck = fm::latest_checkpoint(out + "/checkpoints");
  ASSERT_TRUE(ck.has_value());
  EXPECT_LT(fm::CheckpointReader(*ck, torch::kCPU).step(), kSteps);
  auto r = run(train_cmd(out, mf + " --resume auto"));
  ASSERT_EQ(r.code, 0) << r.output;
  expect_same_weights(final_ckpt(d / "straight"), final_ckpt(out));
}

TEST(Preemption, KillNineInALoopThenResumeIsExact) {
  TempDir d;
  ASSERT_EQ(run(train_cmd(d / "straight")).code, 0);
  const std::string out = d / "killed";
  int lines = 0;
  for (int k = 0; k < 3; ++k) {
    // Each resumed part gets a little further before the next kill (metrics lines past the checkpoint are dropped).
    lines += 6 + random_lines() / 3;
    const int rc = interrupt_at(train_cmd(out, "--resume auto"), out, lines, "KILL");
    EXPECT_EQ(rc, 128 + 9) << "kill " << k;
  }
  auto r = run(train_cmd(out, "--resume auto"));
  ASSERT_EQ(r.code, 0) << r.output;
  expect_same_weights(final_ckpt(d / "straight"), final_ckpt(out));
}

// The guard through the trainer's own schedule: a run resumed with a learning rate that blows its weights up skips every
// step from some point on. It stops at exactly train.max_nonfinite_steps skips, writes no checkpoint while skipping,
// names the newest checkpoint before the skips, and leaves it the newest, so --resume auto takes it.
TEST(Preemption, ADivergedResumeStopsAtTheLimitNamingTheCheckpointBeforeIt) {
  TempDir d;
  const std::string out = d / "run";
  ASSERT_EQ(run(train_cmd(out, "train.steps=200 train.ckpt_every=100")).code, 0);
  auto r = run(train_cmd(out, "train.steps=400 train.ckpt_every=25 train.log_every=100 train.lr=1e6 "
                              "train.warmup_steps=0 train.weight_decay=0.01 train.max_nonfinite_steps=40 "
                              "--resume auto"));
  EXPECT_EQ(r.code, 1) << r.output;
  const auto at = r.output.find("consecutive steps (");
  ASSERT_NE(at, std::string::npos) << r.output;
  int64_t first = 0, last = 0;
  ASSERT_EQ(std::sscanf(r.output.c_str() + at, "consecutive steps (%ld to %ld)", &first, &last), 2) << r.output;
  EXPECT_EQ(last - first + 1, 40) << "the limit holds exactly";
  EXPECT_GT(first, 200);
  EXPECT_LT(last, 400);
  EXPECT_NE(r.output.find("ckpt_000000200.pt"), std::string::npos) << r.output;
  auto newest = fm::latest_checkpoint(out + "/checkpoints");
  ASSERT_TRUE(newest.has_value());
  EXPECT_EQ(fm::CheckpointReader(*newest, torch::kCPU).step(), 200) << "--resume auto takes the one before the skips";
  EXPECT_LT(first, 225) << "the weights blew up before the first checkpoint due after the resume, so none was written";
}

TEST(Preemption, DivergingRunSkipsStepsThenStopsWithoutABadCheckpoint) {
  TempDir d;
  const std::string out = d / "run";
  // lr = 1e6 reached by a slow warmup (lr = step + 1) with weight decay: the weights shrink-and-flip by 1 - lr * wd,
  // which passes -1 after step 200 and overflows float32 a few dozen steps later.
  auto r = run(train_cmd(out, "train.lr=1e6 train.warmup_steps=1000000 train.weight_decay=0.01 "
                              "train.max_nonfinite_steps=5"));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("non-finite"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(" step"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("fm: error:"), r.output.rfind("fm: error:")) << "one error line";
  // Every checkpoint left on disk holds finite weights, EMA and optimizer state.
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(out + "/checkpoints")) {
    if (!e.is_regular_file()) continue;
    ++n;
    for (const char* key : {"model", "ema"}) EXPECT_TRUE(fm::all_finite(checkpoint_weights(e.path(), key))) << e.path();
  }
  EXPECT_GE(n, 1) << "the run should have diverged after its first checkpoints";
  // The metrics count the skipped steps.
  std::ifstream m(out + "/metrics.jsonl");
  int64_t total = 0;
  for (std::string line; std::getline(m, line);) total = nlohmann::json::parse(line)["skipped_steps_total"];
  EXPECT_GT(total, 0);
}
