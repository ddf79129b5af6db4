#include "data/dataset.h"

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
    sample_toy(cfg.path, 1);  // validates the name now rather than at the first batch
    ds.toy = cfg.path;
    return ds;
  }
  throw InputError("data.format: '" + cfg.format + "' is not supported by this build yet");
}

}  // namespace fm
