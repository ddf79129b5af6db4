// The SLURM job scripts (scripts/slurm/*.sbatch) under stand-ins for srun and scontrol: a stop at the time limit
// (fm's exit 75 after SIGUSR1) requeues the job; a stop the script got SIGTERM for (scancel, preemption) does not;
// DEVICE reaches fm; a failure is passed on.
#include <fstream>

#include <gtest/gtest.h>

#include "test_util.h"

namespace fm {
namespace {

using test::TempDir;

struct Job {
  int code;
  std::string srun_args, scontrol_args;
};

// Runs `script` with srun exiting `srun_code`, after sending SIGTERM to the job script first when `term`.
Job run_job(const TempDir& d, const std::string& script, int srun_code, bool term, const std::string& env = "") {
  std::filesystem::create_directories(d / "bin");
  std::ofstream(d / "bin/srun") << "#!/bin/bash\necho \"$@\" > " << d / "srun.args" << "\n"
                                << (term ? "kill -TERM $PPID\n" : "") << "exit " << srun_code << "\n";
  std::ofstream(d / "bin/scontrol") << "#!/bin/bash\necho \"$@\" >> " << d / "scontrol.args" << "\n";
  test::run("chmod +x " + d / "bin/srun" + " " + d / "bin/scontrol");
  std::filesystem::remove(d / "scontrol.args");
  auto r = test::run("cd " + d.str() + " && PATH=" + d / "bin" + ":$PATH SLURM_JOB_ID=4242 SLURM_JOB_NODELIST=n1 " +
                     env + " bash " + test::source_dir() + "/scripts/slurm/" + script);
  auto slurp = [](const std::string& path) {
    std::ifstream f(path);
    return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  };
  return {r.code, slurp(d / "srun.args"), slurp(d / "scontrol.args")};
}

TEST(SlurmScripts, RequeueOnlyAfterTheTimeLimitsStop) {
  for (const char* script : {"train.sbatch", "train_multinode.sbatch"}) {
    SCOPED_TRACE(script);
    TempDir d;
    auto limit = run_job(d, script, 75, /*term=*/false, "DEVICE=cpu");
    EXPECT_EQ(limit.code, 0);
    EXPECT_EQ(limit.scontrol_args, "requeue 4242\n");
    EXPECT_NE(limit.srun_args.find("train --config configs/cifar10.json"), std::string::npos) << limit.srun_args;
    EXPECT_NE(limit.srun_args.find("--resume auto --device cpu"), std::string::npos) << limit.srun_args;

    auto cancelled = run_job(d, script, 75, /*term=*/true);
    EXPECT_EQ(cancelled.code, 75);
    EXPECT_EQ(cancelled.scontrol_args, "") << "scancel and preemption are not requeued by the script";
    EXPECT_NE(cancelled.srun_args.find("--device cuda"), std::string::npos) << cancelled.srun_args;

    auto failed = run_job(d, script, 3, /*term=*/false);
    EXPECT_EQ(failed.code, 3);
    EXPECT_EQ(failed.scontrol_args, "");
  }
}

}  // namespace
}  // namespace fm
