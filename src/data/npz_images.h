#pragma once
// Images in the ADM/EDM sample format: an .npz whose `arr_0` is uint8 [N, H, W, C] (what `fm sample` writes), with
// optional integer `labels` [N].
#include <string>

#include "data/dataset.h"

namespace fm {

// Reads `file` onto the CPU as images uint8 [N, C, H, W] (C = 1 or 3) and, when present, labels int64 [N] with
// num_classes = max label + 1. Throws InputError naming the file and array for a wrong dtype, rank or label.
Dataset read_npz_images(const std::string& file);

// The array 'labels' of `file`, checked against the n items (`noun`: "images", "pairs") of its array `items_array`:
// integers [n] in [0, 2^20), as int64. Throws InputError naming the file, the array and the first bad entry.
torch::Tensor checked_labels(const std::string& file, const torch::Tensor& labels, const std::string& items_array,
                             int64_t n, const std::string& noun);

}  // namespace fm
