#pragma once
// CIFAR-10, binary version (cifar-10-binary.tar.gz): each record is one label byte (0..9) followed by 3072 pixel
// bytes, the R, G and B planes of a 32x32 image, row-major.
#include <string>

#include "data/dataset.h"

namespace fm {

constexpr int64_t kCifar10RecordBytes = 1 + 3 * 32 * 32;

// Reads data_batch_1.bin .. data_batch_5.bin (split "train") or test_batch.bin (split "test") from `dir` or from
// `dir`/cifar-10-batches-bin, onto the CPU: images uint8 [N, 3, 32, 32], labels int64 [N], 10 classes.
// Throws InputError naming the file for a missing file, a length that is not a whole number of records, or a label
// outside 0..9 (naming the record too).
Dataset read_cifar10(const std::string& dir, Split split);

}  // namespace fm
