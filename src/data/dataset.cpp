#include "data/dataset.h"

#include "data/toy2d.h"
#include "io/npy.h"
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
    sample_toy(cfg.path, 1);  // validates the name now rather than at the first batch
    ds.toy = cfg.path;
    return ds;
  }
  if (cfg.format == "npz") {
    // Minimal reader (arr_0, uint8 NHWC, as fm sample and the ADM/EDM tools write); the full one replaces it.
    auto a = read_npz(cfg.path, {"arr_0"}).at("arr_0");
    if (a.scalar_type() != torch::kUInt8 || a.dim() != 4 || (a.size(3) != 1 && a.size(3) != 3))
      throw file_error(cfg.path, "arr_0 must be uint8 [N, H, W, C] with C = 1 or 3, got " +
                                     std::string(c10::toString(a.scalar_type())) + " " + c10::str(a.sizes()));
    if (cfg.limit > 0) a = a.slice(0, 0, std::min(cfg.limit, a.size(0)));
    ds.images = a.permute({0, 3, 1, 2}).contiguous().to(device);
    return ds;
  }
  throw InputError("data.format: '" + cfg.format + "' is not supported by this build yet");
}

}  // namespace fm
