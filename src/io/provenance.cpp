#include "io/provenance.h"

#include <filesystem>

#include "io/file_util.h"

namespace fm {

void record_file(nlohmann::json& record, const std::string& key, const std::string& path) {
  record[key] = path;
  record[key + "_bytes"] = static_cast<int64_t>(std::filesystem::file_size(path));
  record[key + "_crc32"] = file_crc32(path);
}

void record_software(nlohmann::json& record, const torch::Device& device) {
  record["device"] = device.str();
  record["fm_version"] = FM_VERSION;
  record["libtorch_version"] = TORCH_VERSION;
}

}  // namespace fm
