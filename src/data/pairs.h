#pragma once
// The pairs data set `pairs:DIR` that fm reflow writes: DIR/pairs.npz holds x0 (the noise a flow started from at
// t=0) and x1 (where it arrived at t=1), float32 [N, ...] of one sample shape ([N, D] points or [N, C, H, W] images in
// [-1, 1] scale), and, for a class-conditional flow, the labels [N] it was sampled with; DIR/pairs.json records how.
// Training with path.coupling = pairs regresses the straight line between each pair (Reflow).
#include <string>

#include "data/dataset.h"

namespace fm {

// The npz that `spec_path` names: DIR/pairs.npz for a directory, or the file itself.
std::string pairs_file(const std::string& spec_path);

// Reads the pairs onto the CPU (float32, labels int64 with num_classes = max label + 1). Throws InputError naming the
// file and the array for a missing array, a dtype that is not floating point, shapes that differ or hold nothing,
// non-finite values, or bad labels.
Dataset read_pairs(const std::string& spec_path);

}  // namespace fm
