#pragma once
// Draws training batches from a Dataset on its device: a fresh random permutation each epoch, optional horizontal
// flips, pixels scaled to [-1, 1]. Toys draw fresh samples every batch. Pairs come as they are (x1 and its x0) and
// are never flipped: a flip of x1 alone would pair it with noise it did not come from. All randomness comes from the
// device's default generator, so the sampler's own state (permutation and position) plus the generator state resume
// exactly.
#include <torch/torch.h>

#include "data/dataset.h"

namespace fm {

struct Batch {
  torch::Tensor x;       // float32 [B, ...] in [-1, 1] (images) or toy coordinates: the data end x1 of the path
  torch::Tensor labels;  // int64 [B] or undefined
  torch::Tensor x0;      // pairs data (path.coupling = pairs): the noise each x is paired with; otherwise undefined
};

// uint8 images [B, C, H, W] to float in [-1, 1].
torch::Tensor images_to_unit_range(const torch::Tensor& u8);

class BatchSampler {
 public:
  BatchSampler(const Dataset& data, bool hflip);
  Batch next(int64_t batch_size);

  void save(torch::serialize::OutputArchive& ar) const;
  void load(torch::serialize::InputArchive& ar);

 private:
  const Dataset& data_;
  bool hflip_;
  torch::Tensor perm_;  // the current epoch's order (on the data's device)
  int64_t cursor_ = 0;
  int64_t epoch_ = 0;
};

}  // namespace fm
