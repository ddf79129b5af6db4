#include "checkpoint/checkpointer.h"

#include <spdlog/spdlog.h>

#include "checkpoint/seal.h"
#include "io/file_util.h"
#include "util/error.h"

namespace fm {

bool all_finite(const std::vector<torch::Tensor>& tensors) {
  std::vector<torch::Tensor> ok;
  for (const auto& t : tensors)
    if (t.defined() && t.numel() > 0) ok.push_back(torch::isfinite(t).all());
  return ok.empty() || torch::stack(ok).all().item<bool>();
}

namespace {

// The newest checkpoint in `dir` that verifies; nullptr when there is none at all.
std::unique_ptr<CheckpointReader> newest_that_verifies(const std::string& dir, const torch::Device& device) {
  auto all = list_checkpoints(dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      return std::make_unique<CheckpointReader>(it->second, device);
    } catch (const CorruptCheckpoint& e) {
      spdlog::warn("--resume auto: skipping {}", e.what());
    }
  }
  if (!all.empty())
    throw InputError(dir + ": none of its " + std::to_string(all.size()) +
                     " checkpoints verifies; move them aside to start afresh");
  spdlog::info("--resume auto: no checkpoint in {}, starting fresh", dir);
  return nullptr;
}

}  // namespace

Checkpointer::Checkpointer(const std::string& run_dir, dist::World& world, int64_t every, int64_t keep_last)
    : run_dir_(run_dir), dir_(run_dir + "/checkpoints"), world_(world), every_(every), keep_last_(keep_last) {}

std::unique_ptr<CheckpointReader> Checkpointer::choose_resume(const std::string& resume, const torch::Device& device) {
  // unique_ptr, not optional: clang (the sanitizer build) cannot instantiate optional over LibTorch's InputArchive.
  std::unique_ptr<CheckpointReader> ck;
  if (resume == "auto") {
    ck = newest_that_verifies(dir_, device);
  } else if (!resume.empty()) {
    ck = std::make_unique<CheckpointReader>(resume, device);
  } else if (latest_checkpoint(dir_)) {
    throw InputError(run_dir_ + ": the run directory already holds checkpoints; pass --resume auto to continue it or "
                     "choose another --out");
  }
  // Ranks that see different run directories would silently train apart.
  if (world_.distributed()) {
    auto mine = torch::tensor({ck ? ck->step() : int64_t(-1)}, torch::kLong).to(world_.device());
    auto steps = world_.all_gather_cat(mine).cpu();
    if (!torch::equal(steps, steps[0].expand_as(steps)))
      throw InputError(run_dir_ + ": the ranks found different checkpoints to resume (steps by rank, -1 none: " +
                       nlohmann::json(std::vector<int64_t>(steps.data_ptr<int64_t>(),
                                                           steps.data_ptr<int64_t>() + steps.numel())).dump() +
                       "); is --out on a file system every node shares?");
  }
  if (ck) {
    latest_ = ck->path();
    latest_step_ = ck->step();
  }
  return ck;
}

void Checkpointer::start_branch(const CheckpointReader& ck) {
  if (!world_.is_main()) return;
  for (const auto& moved : move_aside_after(dir_, ck.step(), ck.path()))
    spdlog::warn("resuming at step {} abandons a newer checkpoint: moved it to {}", ck.step(), moved);
}

void Checkpointer::set_aside_from(int64_t step) {
  if (!world_.is_main()) return;
  for (const auto& moved : move_aside_after(dir_, step - 1, dir_ + "/" + checkpoint_name(step - 1), "diverged"))
    spdlog::warn("moved {} aside: it was written after the run began to diverge", moved);
}

void Checkpointer::save(const CheckpointContents& c, const std::vector<torch::Tensor>& float_state) {
  if (!all_finite(float_state))
    throw std::runtime_error("non-finite values in the weights or optimizer state at step " + std::to_string(c.step) +
                             "; no checkpoint written, the earlier ones are kept. Lower train.lr or raise "
                             "train.warmup_steps, and continue from one with --resume PATH");
  latest_ = dir_ + "/" + checkpoint_name(c.step);
  latest_step_ = c.step;
  if (!world_.is_main()) return;
  make_dirs(dir_);  // only now: a run that fails before its first checkpoint leaves no empty checkpoints/
  save_checkpoint(latest_, c);
  prune_checkpoints(dir_, keep_last_);  // only after the new one is safely written
}

}  // namespace fm
