#pragma once
// Random draws that belong to items rather than to batches: item i of a run gets the same draw for a seed whatever
// the batch size and however the batches are split over ranks, because the draws come in fixed chunks of 256 items,
// each from a CPU generator seeded by (seed, stream, chunk). `stream` keeps the draws of one run apart (sampling
// noise, dequantisation noise, Hutchinson probes, ...).
#include <cstdint>
#include <functional>
#include <vector>

#include <torch/torch.h>

namespace fm {

// Draws a tensor of the given shape (the chunk's items first) from `gen`, e.g. torch::randn(shape, gen).
using ItemDraw = std::function<torch::Tensor(const std::vector<int64_t>& shape, at::Generator& gen)>;

// The draws of items [first, first + count), each of `item_shape`, stacked: [count, item_shape...] on the CPU.
torch::Tensor per_item_draw(uint64_t seed, uint64_t stream, int64_t first, int64_t count,
                            const std::vector<int64_t>& item_shape, const ItemDraw& draw);

}  // namespace fm
