#include "dist/rank_batches.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace fm {

RankBatches::RankBatches(int64_t n, int64_t batch, int rank, int size)
    : n_(n), batch_(batch), rank_(rank), size_(size) {
  if (n < 0 || batch < 1 || size < 1 || rank < 0 || rank >= size)
    throw std::invalid_argument("RankBatches: n " + std::to_string(n) + ", batch " + std::to_string(batch) +
                                ", rank " + std::to_string(rank) + " of " + std::to_string(size));
}

ItemRange RankBatches::batch(int64_t j) const {
  const int64_t first = std::min(n_, j * batch_);
  return {first, std::min(batch_, n_ - first)};
}

ItemRange RankBatches::round_items(int64_t round) const {
  const int64_t first = std::min(n_, round * size_ * batch_);
  return {first, std::min(size_ * batch_, n_ - first)};
}

}  // namespace fm
