#pragma once
// Downsampled ImageNet 32x32 (Chrabaszcz et al. 2017, the npz release): train_data_batch_1.npz ..
// train_data_batch_10.npz and val_data.npz, each with `data`, uint8 [N, 3072] channel-major (the R, G and B planes of
// a 32x32 image, row-major), and `labels`, 1-based class indices 1..1000.
#include <string>

#include "data/dataset.h"

namespace fm {

constexpr int64_t kImageNet32Classes = 1000;

// Reads the train batches that exist in `dir` (at least one, in numeric order) for split "train", or val_data.npz
// for split "test", onto the CPU: images uint8 [N, 3, 32, 32], labels int64 [N] 0-based, 1000 classes.
// Throws InputError naming the file and array for a wrong dtype, shape or label.
Dataset read_imagenet32(const std::string& dir, Split split);

}  // namespace fm
