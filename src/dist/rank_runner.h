#pragma once
// The one loop behind every command that works through a list of items over the ranks of a job (fm sample,
// fm eval-nll, fm fid-features, and fm evaluate through them): n items cut into batches as one process cuts them
// (dist/rank_batches.h), each rank running its batch of every round, the outputs gathered in item order, a progress
// line, finished batches kept as shards when the run can be resumed, and a stop that every rank agrees on between
// rounds. With one process it is a plain loop over the batches.
#include <functional>
#include <string>
#include <vector>

#include "dist/rank_batches.h"
#include "dist/shard_dir.h"
#include "dist/world.h"

namespace fm::dist {

struct RunOverRanks {
  int64_t n = 0, batch = 1;
  // The names of the body's outputs, in the order it returns them (and keys of the shard files).
  std::vector<std::string> outputs;
  std::string label;          // the progress line's label, e.g. "sample"
  bool progress = true;       // the progress line on stderr (rank 0)
  int64_t progress_every = 1; // items between plain lines when stderr is not a terminal
  ShardDir* shards = nullptr; // finished batches kept here and reused on resume; nullptr: nothing is kept
  // What a stop says on rank 0 after "stopped after K of N items" (where the kept work is, how to continue).
  std::string on_stop;
};

// The outputs of the items `b`, in RunOverRanks::outputs order: each tensor's first dimension runs over the batch's
// items, or over batches (one row per batch). Called with an empty range on a rank that has no batch in the last
// round: it must return empty tensors of the same trailing shape and dtype.
using BatchBody = std::function<NamedTensors(const ItemRange& b)>;

// After each round, on every rank: `done` is the round's items and `gathered` each output of every rank's batch of
// the round, concatenated in item order, on the device the body returned it on. Returns the progress line's text.
using RoundSink = std::function<std::string(const ItemRange& done, const std::vector<torch::Tensor>& gathered)>;

// Runs every round. On a stop agreed between rounds it keeps the finished shards and leaves with StopRequested
// (dist/agree_to_stop.h; state_saved when shards are kept).
void run_over_ranks(World& world, const RunOverRanks& run, const BatchBody& body, const RoundSink& sink);

}  // namespace fm::dist
