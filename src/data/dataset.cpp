#include "data/dataset.h"

#include <cctype>
#include <filesystem>

#include "data/cifar10.h"
#include "data/image_folder.h"
#include "data/imagenet32.h"
#include "data/npz_images.h"
#include "data/pairs.h"
#include "data/shapes.h"
#include "data/toy2d.h"
#include "io/npy.h"
#include "util/error.h"

namespace fm {

std::vector<int64_t> Dataset::sample_shape() const {
  if (is_toy()) return {2};
  if (is_pairs()) return pair_x1.sizes().slice(1).vec();
  return {images.size(1), images.size(2), images.size(3)};
}

std::string data_spec(const DataConfig& cfg) { return std::string(name_of(cfg.format)) + ":" + cfg.path; }

DataConfig parse_data_spec(const std::string& spec) {
  DataConfig cfg;
  auto colon = spec.find(':');
  if (colon == std::string::npos)
    throw InputError("data spec '" + spec + "': expected FORMAT:PATH (toy:NAME, cifar10:DIR, imagenet32:DIR, "
                     "folder:DIR, npz:FILE, shapes:N, pairs:DIR)");
  const std::string format = spec.substr(0, colon);
  auto f = choice_from<DataFormat>(format);
  if (!f)
    throw InputError("data spec '" + spec + "': unknown format '" + format + "' (" + choice_list<DataFormat>() + ")");
  cfg.format = *f;
  cfg.path = spec.substr(colon + 1);
  return cfg;
}

namespace {

// shapes:N, or data.size when the path is empty.
int64_t shapes_count(const DataConfig& cfg) {
  if (cfg.path.empty()) return cfg.size;
  bool digits = cfg.path.size() <= 12;
  for (char ch : cfg.path) digits = digits && std::isdigit(static_cast<unsigned char>(ch));
  if (!digits || std::stoll(cfg.path) <= 0)
    throw InputError("data.path: shapes takes an image count N > 0 (or an empty path to use data.size), got '" +
                     cfg.path + "'");
  return std::stoll(cfg.path);
}

// The images (and labels) of an image format, read onto the CPU, before any limit.
Dataset read_images(const DataConfig& cfg) {
  if (cfg.format != DataFormat::shapes && !std::filesystem::exists(cfg.path))
    throw InputError(data_spec(cfg) + ": no such file or directory (a config's data.path: set it with "
                     "--set data.path=PATH; a command's data option: FORMAT:PATH)");
  switch (cfg.format) {
    case DataFormat::cifar10:
    case DataFormat::imagenet32:
      if (cfg.resolution > 0 && cfg.resolution != 32)
        throw InputError(std::string("data.resolution: ") + name_of(cfg.format) + " images are 32x32; resizing (to " +
                         std::to_string(cfg.resolution) + ") is only done for folder and shapes");
      return cfg.format == DataFormat::cifar10 ? read_cifar10(cfg.path, cfg.split)
                                               : read_imagenet32(cfg.path, cfg.split);
    case DataFormat::folder: {
      ImageFolderOptions opts;
      opts.resolution = cfg.resolution;
      opts.center_crop = cfg.center_crop;
      opts.limit = cfg.limit;
      return read_image_folder(cfg.path, opts);
    }
    case DataFormat::npz: {
      auto cpu = read_npz_images(cfg.path);
      if (cfg.resolution > 0 && (cpu.images.size(2) != cfg.resolution || cpu.images.size(3) != cfg.resolution))
        throw file_error(cfg.path, "images are " + std::to_string(cpu.images.size(3)) + "x" +
                                       std::to_string(cpu.images.size(2)) + " but data.resolution is " +
                                       std::to_string(cfg.resolution) + " (npz images are not resized)");
      return cpu;
    }
    case DataFormat::shapes: {
      const int64_t res = cfg.resolution > 0 ? cfg.resolution : 32;
      if (res < 8) throw InputError("data.resolution: shapes need images of side >= 8, got " + std::to_string(res));
      return shapes_dataset(make_shapes(shapes_count(cfg), res, /*seed=*/0));
    }
    case DataFormat::pairs: {
      auto pairs = read_pairs(cfg.path);
      const auto& x1 = pairs.pair_x1;
      if (cfg.resolution > 0 && (x1.dim() != 4 || x1.size(2) != cfg.resolution || x1.size(3) != cfg.resolution))
        throw InputError("data.resolution: " + std::to_string(cfg.resolution) + " asks for resizing, but pairs are used "
                         "at the shape fm reflow wrote them (" + pairs_file(cfg.path) + ": x1 " +
                         shape_string(x1) + "); set it to 0 or to their side");
      return pairs;
    }
    case DataFormat::toy:
      break;
  }
  throw std::logic_error("read_images: not an image format");
}

}  // namespace

Dataset load_dataset(const DataConfig& cfg, const torch::Device& device) {
  Dataset ds;
  ds.name = data_spec(cfg);
  ds.device = device;
  if (cfg.format == DataFormat::toy) {
    ds.toy = parse_toy(cfg.path);
    ds.name = std::string("toy:") + name_of(*ds.toy);
    return ds;
  }
  // Every reader builds its tensors on the CPU; they move to the device once, after the limit is applied.
  Dataset cpu = read_images(cfg);
  if (cfg.format != DataFormat::folder) {  // the folder reader takes its subset before decoding
    cpu.subset = describe_subset(cpu.size(), cfg.limit);
    if (cfg.limit > 0 && cfg.limit < cpu.size()) {
      // index_select copies, so the rest of the set is freed rather than kept alive by a view.
      auto idx = torch::tensor(evenly_spread(cpu.size(), cfg.limit), torch::kLong);
      for (auto* t : {&cpu.images, &cpu.pair_x0, &cpu.pair_x1, &cpu.labels})
        if (t->defined()) *t = t->index_select(0, idx);
    }
  }
  for (auto [to, from] : {std::pair{&ds.images, &cpu.images}, std::pair{&ds.pair_x0, &cpu.pair_x0},
                          std::pair{&ds.pair_x1, &cpu.pair_x1}, std::pair{&ds.labels, &cpu.labels}})
    if (from->defined()) *to = from->to(device);
  ds.num_classes = cpu.num_classes;
  ds.class_names = cpu.class_names;
  ds.subset = cpu.subset;
  return ds;
}

std::vector<int64_t> sample_shape_of(const DataConfig& cfg) {
  switch (cfg.format) {
    case DataFormat::toy:
      return {2};
    case DataFormat::cifar10:
    case DataFormat::imagenet32:
      return {3, 32, 32};
    case DataFormat::shapes: {
      const int64_t res = cfg.resolution > 0 ? cfg.resolution : 32;
      return {3, res, res};
    }
    case DataFormat::folder:
    case DataFormat::npz:
    case DataFormat::pairs:
      break;
  }
  return load_dataset(cfg, torch::kCPU).sample_shape();
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
