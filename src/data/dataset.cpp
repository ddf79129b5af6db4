#include "data/dataset.h"

#include <cctype>
#include <filesystem>

#include "data/cifar10.h"
#include "data/image_folder.h"
#include "data/imagenet32.h"
#include "data/npz_images.h"
#include "data/shapes.h"
#include "data/toy2d.h"
#include "util/error.h"

namespace fm {

std::vector<int64_t> Dataset::sample_shape() const {
  if (is_toy()) return {2};
  return {images.size(1), images.size(2), images.size(3)};
}

DataConfig parse_data_spec(const std::string& spec) {
  DataConfig cfg;
  auto colon = spec.find(':');
  if (colon == std::string::npos)
    throw InputError("data spec '" + spec + "': expected FORMAT:PATH (toy:NAME, cifar10:DIR, imagenet32:DIR, "
                     "folder:DIR, npz:FILE, shapes:N)");
  cfg.format = spec.substr(0, colon);
  cfg.path = spec.substr(colon + 1);
  for (const char* f : {"toy", "cifar10", "imagenet32", "folder", "npz", "shapes"})
    if (cfg.format == f) return cfg;
  throw InputError("data spec '" + spec + "': unknown format '" + cfg.format +
                   "' (toy, cifar10, imagenet32, folder, npz, shapes)");
}

Dataset load_dataset(const DataConfig& cfg, const torch::Device& device) {
  Dataset ds;
  ds.name = cfg.format + ":" + cfg.path;
  ds.device = device;
  if (cfg.format == "toy") {
    ds.toy = cfg.path.empty() ? "checkerboard" : cfg.path;
    ds.name = "toy:" + ds.toy;
    sample_toy(ds.toy, 1);  // validates the name now rather than at the first batch
    return ds;
  }
  if (cfg.format != "shapes" && !std::filesystem::exists(cfg.path))
    throw InputError(cfg.format + ":" + cfg.path + ": no such file or directory (a config's data.path: set it with "
                     "--set data.path=PATH; a command's data option: FORMAT:PATH)");
  // Every reader builds its tensors on the CPU; they move to the device once, after the limit is applied.
  Dataset cpu;
  if (cfg.format == "cifar10" || cfg.format == "imagenet32") {
    if (cfg.resolution > 0 && cfg.resolution != 32)
      throw InputError("data.resolution: " + cfg.format + " images are 32x32; resizing (to " +
                       std::to_string(cfg.resolution) + ") is only done for folder and shapes");
    cpu = cfg.format == "cifar10" ? read_cifar10(cfg.path, cfg.split) : read_imagenet32(cfg.path, cfg.split);
  } else if (cfg.format == "folder") {
    ImageFolderOptions opts;
    opts.resolution = cfg.resolution;
    opts.center_crop = cfg.center_crop;
    opts.limit = cfg.limit;
    cpu = read_image_folder(cfg.path, opts);
  } else if (cfg.format == "npz") {
    cpu = read_npz_images(cfg.path);
    if (cfg.resolution > 0 && (cpu.images.size(2) != cfg.resolution || cpu.images.size(3) != cfg.resolution))
      throw file_error(cfg.path, "images are " + std::to_string(cpu.images.size(3)) + "x" +
                                     std::to_string(cpu.images.size(2)) + " but data.resolution is " +
                                     std::to_string(cfg.resolution) + " (npz images are not resized)");
  } else if (cfg.format == "shapes") {
    int64_t n = cfg.size;
    if (!cfg.path.empty()) {
      bool digits = cfg.path.size() <= 12;
      for (char ch : cfg.path) digits = digits && std::isdigit(static_cast<unsigned char>(ch));
      if (!digits || std::stoll(cfg.path) <= 0)
        throw InputError("data.path: shapes takes an image count N > 0 (or an empty path to use data.size), got '" +
                         cfg.path + "'");
      n = std::stoll(cfg.path);
    }
    const int64_t res = cfg.resolution > 0 ? cfg.resolution : 32;
    if (res < 8) throw InputError("data.resolution: shapes need images of side >= 8, got " + std::to_string(res));
    cpu = shapes_dataset(make_shapes(n, res, /*seed=*/0));
  } else {
    throw InputError("data.format: '" + cfg.format + "' is not supported by this build");
  }

  if (cfg.format != "folder") {  // the folder reader takes its subset before decoding
    cpu.subset = describe_subset(cpu.images.size(0), cfg.limit);
    if (cfg.limit > 0 && cfg.limit < cpu.images.size(0)) {
      // index_select copies, so the rest of the set is freed rather than kept alive by a view.
      auto idx = torch::tensor(evenly_spread(cpu.images.size(0), cfg.limit), torch::kLong);
      cpu.images = cpu.images.index_select(0, idx);
      if (cpu.labels.defined()) cpu.labels = cpu.labels.index_select(0, idx);
    }
  }
  ds.images = cpu.images.to(device);
  if (cpu.labels.defined()) ds.labels = cpu.labels.to(device);
  ds.num_classes = cpu.num_classes;
  ds.class_names = cpu.class_names;
  ds.subset = cpu.subset;
  return ds;
}

std::vector<int64_t> evenly_spread(int64_t n, int64_t limit) {
  const int64_t k = limit > 0 ? std::min(n, limit) : n;
  std::vector<int64_t> idx(static_cast<size_t>(std::max<int64_t>(k, 0)));
  // i * n in 128 bits, so that no data set size can overflow the product.
  for (int64_t i = 0; i < k; ++i)
    idx[i] = static_cast<int64_t>(static_cast<__int128>(i) * n / k);
  return idx;
}

std::string describe_subset(int64_t n, int64_t limit) {
  if (limit <= 0 || limit >= n) return "";
  return std::to_string(limit) + " of " + std::to_string(n) + " images, evenly spread: index floor(i * " +
         std::to_string(n) + " / " + std::to_string(limit) + ")";
}

std::string describe_classes(const Dataset& ds, size_t max_names) {
  if (ds.num_classes == 0) return "unlabelled";
  std::string s = std::to_string(ds.num_classes) + " classes";
  if (ds.class_names.empty()) return s;
  s += " (";
  for (size_t i = 0; i < ds.class_names.size() && i < max_names; ++i) s += (i ? ", " : "") + ds.class_names[i];
  if (ds.class_names.size() > max_names) s += ", ...";
  return s + ")";
}

}  // namespace fm
