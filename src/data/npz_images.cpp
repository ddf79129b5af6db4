#include "data/npz_images.h"

#include <algorithm>

#include "io/npy.h"
#include "util/error.h"

namespace fm {
namespace {

constexpr int64_t kMaxLabel = int64_t(1) << 20;

}  // namespace

Dataset read_npz_images(const std::string& file) {
  auto keys = npz_keys(file);
  const bool has_labels = std::find(keys.begin(), keys.end(), "labels") != keys.end();
  auto arrays = read_npz(file, has_labels ? std::vector<std::string>{"arr_0", "labels"} : std::vector<std::string>{"arr_0"});
  auto x = arrays.at("arr_0");
  if (x.scalar_type() != torch::kUInt8)
    throw file_error(file, "array 'arr_0' has dtype " + std::string(c10::toString(x.scalar_type())) +
                               ", expected uint8 (images as N x H x W x C)");
  if (x.dim() != 4 || (x.size(3) != 1 && x.size(3) != 3))
    throw file_error(file, "array 'arr_0' has shape " + shape_string(x) + ", expected [N, H, W, C] with C = 1 or 3");
  if (x.size(0) == 0 || x.size(1) == 0 || x.size(2) == 0)
    throw file_error(file, "array 'arr_0' has shape " + shape_string(x) + ": no pixels");
  Dataset ds;
  ds.images = x.permute({0, 3, 1, 2}).contiguous();
  if (has_labels) {
    ds.labels = checked_labels(file, arrays.at("labels"), "arr_0", x.size(0), "images");
    ds.num_classes = ds.labels.max().item<int64_t>() + 1;
  }
  return ds;
}

torch::Tensor checked_labels(const std::string& file, const torch::Tensor& labels, const std::string& items_array,
                             int64_t n, const std::string& noun) {
  auto lab = labels;
  if (!c10::isIntegralType(lab.scalar_type(), /*includeBool=*/false))
    throw file_error(file, "array 'labels' has dtype " + std::string(c10::toString(lab.scalar_type())) +
                               ", expected integers");
  if (lab.dim() != 1 || lab.size(0) != n)
    throw file_error(file, "array 'labels' has shape " + shape_string(lab) + " but '" + items_array + "' holds " +
                               std::to_string(n) + " " + noun);
  lab = lab.to(torch::kLong);
  if (lab.min().item<int64_t>() < 0) {
    int64_t i = (lab < 0).nonzero()[0].item<int64_t>();
    throw file_error(file, "array 'labels' entry " + std::to_string(i) + " is " + std::to_string(lab[i].item<int64_t>()) +
                               ", expected >= 0");
  }
  // Labels index embedding tables; a stray huge one must not size one (or overflow max + 1).
  if (lab.max().item<int64_t>() >= kMaxLabel) {
    int64_t i = (lab >= kMaxLabel).nonzero()[0].item<int64_t>();
    throw file_error(file, "array 'labels' entry " + std::to_string(i) + " is " + std::to_string(lab[i].item<int64_t>()) +
                               ", expected < " + std::to_string(kMaxLabel));
  }
  return lab;
}

}  // namespace fm
