#include "dist/rank_runner.h"

#include <algorithm>
#include <optional>

#include <spdlog/spdlog.h>

#include "dist/agree_to_stop.h"
#include "util/error.h"
#include "util/progress.h"

namespace fm::dist {
namespace {

// The outputs of batch `b`: from its shard when one holds them, else computed (and kept when shards are).
std::vector<torch::Tensor> batch_outputs(const RunOverRanks& run, const BatchBody& body, const ItemRange& b) {
  std::optional<NamedTensors> named;
  if (run.shards && !b.empty()) named = run.shards->load(b);
  const bool loaded = named.has_value();
  if (!loaded) named = body(b);
  std::vector<torch::Tensor> out;
  for (const auto& name : run.outputs) {
    auto it = std::find_if(named->begin(), named->end(), [&](const auto& p) { return p.first == name; });
    if (it == named->end()) {
      if (loaded)
        throw InputError(run.shards->dir() + ": a shard of items " + std::to_string(b.first) + ".." +
                         std::to_string(b.first + b.count - 1) + " has no '" + name +
                         "'; start afresh with --overwrite");
      throw std::logic_error("run_over_ranks: the body returned no output '" + name + "'");
    }
    out.push_back(it->second);
  }
  if (run.shards && !b.empty() && !loaded) run.shards->save(b, *named);
  return out;
}

}  // namespace

void run_over_ranks(World& world, const RunOverRanks& run, const BatchBody& body, const RoundSink& sink) {
  const RankBatches plan(run.n, run.batch, world.rank(), world.size());
  std::optional<Progress> progress;
  if (world.is_main() && run.progress) progress.emplace(run.label, run.n, 0, run.progress_every);
  for (int64_t round = 0; round < plan.rounds(); ++round) {
    const ItemRange done = plan.round_items(round);
    std::vector<torch::Tensor> gathered;
    for (const auto& t : batch_outputs(run, body, plan.mine(round))) {
      // Every rank's batch of the round in rank order is the round's items in order; the tensors travel on the
      // world's device (CUDA under NCCL) and come back to where the body left them.
      gathered.push_back(world.distributed() ? world.all_gather_cat(t.to(world.device())).to(t.device()) : t);
    }
    const std::string extra = sink(done, gathered);
    if (progress) progress->update(done.first + done.count, extra);
    if (round + 1 == plan.rounds()) break;
    if (const int sig = agree_to_stop(world)) {
      if (world.is_main())
        spdlog::info("{} stopped after {} of {} items{}", run.label, done.first + done.count, run.n,
                     run.on_stop.empty() ? "" : "; " + run.on_stop);
      leave_on_stop(world, sig, run.shards != nullptr);
    }
  }
  if (progress) progress->finish();
}

}  // namespace fm::dist
