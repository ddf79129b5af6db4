#include "data/pairs.h"

#include <algorithm>
#include <filesystem>
#include <map>

#include "data/npz_images.h"
#include "io/npy.h"
#include "util/error.h"

namespace fm {

std::string pairs_file(const std::string& spec_path) {
  std::error_code ec;
  return std::filesystem::is_directory(spec_path, ec) ? spec_path + "/pairs.npz" : spec_path;
}

namespace {

// x0 or x1: floating point, [N, D] or [N, C, H, W] with nothing empty, every value finite; as float32.
torch::Tensor pair_array(const std::string& file, const std::map<std::string, torch::Tensor>& arrays,
                         const std::string& name) {
  auto it = arrays.find(name);
  if (it == arrays.end())
    throw file_error(file, "no array '" + name + "' (fm reflow writes x0, the noise, and x1, the samples)");
  const auto& x = it->second;
  if (!c10::isFloatingType(x.scalar_type()))
    throw file_error(file, "array '" + name + "' has dtype " + std::string(c10::toString(x.scalar_type())) +
                               ", expected float32");
  if ((x.dim() != 2 && x.dim() != 4) || x.numel() == 0)
    throw file_error(file, "array '" + name + "' has shape " + shape_string(x) +
                               ", expected [N, D] points or [N, C, H, W] images, none of them empty");
  auto f = x.to(torch::kFloat32);
  if (!torch::isfinite(f).all().item<bool>()) {
    const int64_t row = (~torch::isfinite(f)).reshape({f.size(0), -1}).any(1).nonzero()[0].item<int64_t>();
    throw file_error(file, "array '" + name + "' holds a non-finite value in pair " + std::to_string(row));
  }
  return f;
}

}  // namespace

Dataset read_pairs(const std::string& spec_path) {
  const std::string file = pairs_file(spec_path);
  std::error_code ec;
  if (!std::filesystem::exists(file, ec))
    throw InputError("pairs:" + spec_path + ": no " + file + " (fm reflow --out DIR writes DIR/pairs.npz)");
  const auto keys = npz_keys(file);
  const bool has_labels = std::find(keys.begin(), keys.end(), "labels") != keys.end();
  std::vector<std::string> wanted{"x0", "x1"};
  if (has_labels) wanted.push_back("labels");
  for (const auto& k : {"x0", "x1"})
    if (std::find(keys.begin(), keys.end(), k) == keys.end())
      throw file_error(file, std::string("no array '") + k + "' (fm reflow writes x0, the noise, and x1, the samples)");
  const auto arrays = read_npz(file, wanted);
  Dataset ds;
  ds.pair_x0 = pair_array(file, arrays, "x0");
  ds.pair_x1 = pair_array(file, arrays, "x1");
  if (ds.pair_x0.sizes() != ds.pair_x1.sizes())
    throw file_error(file, "arrays 'x0' " + shape_string(ds.pair_x0) + " and 'x1' " + shape_string(ds.pair_x1) +
                               " differ in shape; a pair is one noise sample and the sample it became");
  if (has_labels) {
    ds.labels = checked_labels(file, arrays.at("labels"), "x1", ds.pair_x1.size(0), "pairs");
    ds.num_classes = ds.labels.max().item<int64_t>() + 1;
  }
  return ds;
}

}  // namespace fm
