#include "data/imagenet32.h"

#include <filesystem>

#include "io/npy.h"
#include "util/error.h"

namespace fm {
namespace {

namespace fs = std::filesystem;

bool is_integer(const torch::Tensor& t) {
  return c10::isIntegralType(t.scalar_type(), /*includeBool=*/false);
}

void read_batch(const fs::path& file, std::vector<torch::Tensor>& images, std::vector<torch::Tensor>& labels) {
  const std::string name = file.string();
  auto arrays = read_npz(name, {"data", "labels"});
  auto data = arrays.at("data"), lab = arrays.at("labels");
  if (data.scalar_type() != torch::kUInt8)
    throw file_error(name, "array 'data' has dtype " + std::string(c10::toString(data.scalar_type())) +
                               ", expected uint8");
  if (data.dim() != 2 || data.size(1) != 3 * 32 * 32)
    throw file_error(name, "array 'data' has shape " + shape_string(data) +
                               ", expected [N, 3072] (32x32 RGB, channel-major)");
  // An empty batch would pass every other check and leave training nothing to draw from.
  if (data.size(0) == 0) throw file_error(name, "array 'data' holds no images (shape " + shape_string(data) + ")");
  if (!is_integer(lab))
    throw file_error(name, "array 'labels' has dtype " + std::string(c10::toString(lab.scalar_type())) +
                               ", expected integers");
  if (lab.dim() != 1 || lab.size(0) != data.size(0))
    throw file_error(name, "array 'labels' has shape " + shape_string(lab) + " but 'data' holds " +
                               std::to_string(data.size(0)) + " images");
  lab = lab.to(torch::kLong);
  auto bad = ((lab < 1) | (lab > kImageNet32Classes)).nonzero();
  if (bad.numel() > 0) {
    int64_t i = bad[0].item<int64_t>();
    throw file_error(name, "array 'labels' entry " + std::to_string(i) + " is " + std::to_string(lab[i].item<int64_t>()) +
                               ", expected 1..1000 (1-based)");
  }
  images.push_back(data.view({-1, 3, 32, 32}));
  labels.push_back(lab - 1);
}

}  // namespace

Dataset read_imagenet32(const std::string& dir, Split split) {
  const fs::path d(dir);
  if (!fs::is_directory(d)) throw InputError("imagenet32: '" + dir + "' is not a directory");
  std::vector<fs::path> files;
  if (split == Split::train) {
    for (int i = 1; i <= 10; ++i) {
      auto f = d / ("train_data_batch_" + std::to_string(i) + ".npz");
      if (fs::is_regular_file(f)) files.push_back(f);
    }
    if (files.empty())
      throw InputError("imagenet32: " + d.string() + ": no train_data_batch_1.npz .. train_data_batch_10.npz");
  } else {
    auto f = d / "val_data.npz";
    if (!fs::is_regular_file(f)) throw InputError("imagenet32: " + d.string() + ": missing val_data.npz");
    files.push_back(f);
  }
  std::vector<torch::Tensor> images, labels;
  for (const auto& f : files) read_batch(f, images, labels);
  Dataset ds;
  ds.images = images.size() == 1 ? images[0] : torch::cat(images);
  ds.labels = labels.size() == 1 ? labels[0] : torch::cat(labels);
  ds.num_classes = kImageNet32Classes;
  return ds;
}

}  // namespace fm
