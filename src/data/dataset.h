#pragma once
// A data set held whole in memory on the training device, or an endless 2-D toy distribution.
// Images are uint8 [N, C, H, W]; batches are scaled to [-1, 1] on the device, so the data pipeline costs no host
// work per step.
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "config/config.h"

namespace fm {

struct Dataset {
  std::string name;       // the spec it came from, for messages ("cifar10:/data/cifar-10-batches-bin")
  std::optional<ToyData> toy;  // set: the 2-D distribution sampled afresh for every batch
  torch::Tensor images;   // uint8 [N, C, H, W]
  // pairs:DIR (data/pairs.h) instead of images: the noise x0 and the sample x1 of each pair, float32 [N, ...].
  torch::Tensor pair_x0, pair_x1;
  torch::Tensor labels;   // int64 [N], or undefined when the data has no classes
  int64_t num_classes = 0;
  std::vector<std::string> class_names;  // by class index, as torchvision's class_to_idx orders them; may be empty
  std::string subset;     // how --limit / data.limit chose the images ("" = all of them)
  torch::Device device{torch::kCPU};

  bool is_toy() const { return toy.has_value(); }
  bool is_pairs() const { return pair_x1.defined(); }
  int64_t size() const { return is_toy() ? 0 : is_pairs() ? pair_x1.size(0) : images.size(0); }
  // The shape of one sample: {2} for toys, {C, H, W} for images, x1's for pairs.
  std::vector<int64_t> sample_shape() const;
};

// A data spec "format:arg" (toy:NAME, cifar10:DIR, imagenet32:DIR, folder:DIR, npz:FILE, shapes:N, pairs:DIR) as a DataConfig
// with the other fields at their defaults; throws InputError naming the spec when the format is unknown.
DataConfig parse_data_spec(const std::string& spec);
// The spec of a data config: "format:path".
std::string data_spec(const DataConfig& cfg);

// The subset a limit takes from n items: `limit` indices at a fixed stride, floor(i * n / limit), so that a folder
// listed class by class (or any file in class order) gives every class its share; all of them when limit is 0 or
// >= n. Deterministic, and the same rule for every command and data format.
std::vector<int64_t> evenly_spread(int64_t n, int64_t limit);
// The rule as one would state it in a log or a provenance record.
std::string describe_subset(int64_t n, int64_t limit);

// Names the classes: "10 classes (airplane, automobile, ...)", at most `max_names` names, or "unlabelled".
std::string describe_classes(const Dataset& ds, size_t max_names = 12);

// The shape of one sample of the data `cfg` describes ({2} for toys, {C, H, W} for images), read from the files only
// where the config does not fix it (folder without data.resolution, npz).
std::vector<int64_t> sample_shape_of(const DataConfig& cfg);

// Loads what `cfg` describes onto `device` (images as uint8, labels as int64).
Dataset load_dataset(const DataConfig& cfg, const torch::Device& device);

}  // namespace fm
