#pragma once
// The batches of an evaluation (samples, likelihoods, FID features) split over the ranks of a process group so that
// the result is the one a single process gives. The items are cut into the batches one process cuts,
// [j * batch, min(n, (j + 1) * batch)), because a batch's composition can change its numbers (dopri5 takes one step
// size per batch; batched kernels may sum in another order for another shape), and batch j goes to rank j mod size.
// The ranks go through the batches in rounds of `size` batches: round k holds the contiguous items
// [k * size * batch, ...), so gathering each rank's batch of a round in rank order gives those items in order, and
// every rank makes one round's collectives per round, a rank with no batch left in the last round included.
#include <cstdint>

namespace fm {

struct ItemRange {
  int64_t first = 0, count = 0;
  bool empty() const { return count == 0; }
};

class RankBatches {
 public:
  // n items in batches of `batch` (both >= 1) over `size` ranks, seen from `rank`.
  RankBatches(int64_t n, int64_t batch, int rank, int size);
  int64_t batches() const { return (n_ + batch_ - 1) / batch_; }
  // The same on every rank.
  int64_t rounds() const { return (batches() + size_ - 1) / size_; }
  // Batch j of the whole run (empty past the last one).
  ItemRange batch(int64_t j) const;
  // This rank's batch in round k: batch k * size + rank, empty where the last round has fewer batches than ranks.
  ItemRange mine(int64_t round) const { return batch(round * size_ + rank_); }
  // Every rank's items of round k together, in rank order.
  ItemRange round_items(int64_t round) const;

 private:
  int64_t n_, batch_;
  int rank_, size_;
};

}  // namespace fm
