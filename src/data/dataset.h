#pragma once
// A data set held whole in memory on the training device, or an endless 2-D toy distribution.
// Images are uint8 [N, C, H, W]; batches are scaled to [-1, 1] on the device, so the data pipeline costs no host
// work per step.
#include <string>
#include <vector>

#include <torch/torch.h>

#include "config/config.h"

namespace fm {

struct Dataset {
  std::string name;       // the spec it came from, for messages ("cifar10:/data/cifar-10-batches-bin")
  std::string toy;        // non-empty: the 2-D distribution sampled afresh for every batch
  torch::Tensor images;   // uint8 [N, C, H, W]
  torch::Tensor labels;   // int64 [N], or undefined when the data has no classes
  int64_t num_classes = 0;
  torch::Device device{torch::kCPU};

  bool is_toy() const { return !toy.empty(); }
  int64_t size() const { return is_toy() ? 0 : images.size(0); }
  // The shape of one sample: {2} for toys, {C, H, W} for images.
  std::vector<int64_t> sample_shape() const;
};

// A data spec "format:arg" (toy:NAME, cifar10:DIR, imagenet32:DIR, folder:DIR, npz:FILE, shapes:N) as a DataConfig
// with the other fields at their defaults; throws InputError naming the spec when the format is unknown.
DataConfig parse_data_spec(const std::string& spec);

// Loads what `cfg` describes onto `device` (images as uint8, labels as int64).
Dataset load_dataset(const DataConfig& cfg, const torch::Device& device);

}  // namespace fm
