#include "train/forward_rng.h"

#include <mutex>

namespace fm {
namespace {

// splitmix64's finaliser: nearby (seed, step, rank) triples give unrelated seeds.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

ForwardRngScope::ForwardRngScope(const torch::Device& device, uint64_t seed, int64_t step, int rank)
    : gen_(at::globalContext().defaultGenerator(device)) {
  std::lock_guard<std::mutex> lock(gen_.mutex());
  saved_ = gen_.get_state();
  gen_.set_current_seed(mix(mix(mix(seed) ^ static_cast<uint64_t>(step)) ^ static_cast<uint64_t>(rank)));
}

ForwardRngScope::~ForwardRngScope() {
  std::lock_guard<std::mutex> lock(gen_.mutex());
  gen_.set_state(saved_);
}

}  // namespace fm
