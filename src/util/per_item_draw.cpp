#include "util/per_item_draw.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>

namespace fm {

torch::Tensor per_item_draw(uint64_t seed, uint64_t stream, int64_t first, int64_t count,
                            const std::vector<int64_t>& item_shape, const ItemDraw& draw) {
  constexpr int64_t kChunk = 256;
  std::vector<torch::Tensor> parts;
  for (int64_t c = first / kChunk; c * kChunk < first + count; ++c) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed * 0x9E3779B97F4A7C15ull + stream * 0xBF58476D1CE4E5B9ull +
                                                        static_cast<uint64_t>(c));
    std::vector<int64_t> shape = item_shape;
    shape.insert(shape.begin(), kChunk);
    auto chunk = draw(shape, gen);
    const int64_t lo = std::max(first, c * kChunk) - c * kChunk;
    const int64_t hi = std::min(first + count, (c + 1) * kChunk) - c * kChunk;
    parts.push_back(chunk.narrow(0, lo, hi - lo));
  }
  return torch::cat(parts);
}

}  // namespace fm
