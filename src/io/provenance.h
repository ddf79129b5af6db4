#pragma once
// The provenance every output record of fm carries (samples.json, eval-nll's --out, the .json beside FID
// statistics), written by one pair of functions so that the records agree on their keys: which files the numbers
// came from, fingerprinted, and which fm, LibTorch and device computed them.
#include <string>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace fm {

// record[key] = path, record[key + "_bytes"] = its size, record[key + "_crc32"] = its CRC-32 (8 hex digits).
void record_file(nlohmann::json& record, const std::string& key, const std::string& path);

// record["device"], record["fm_version"], record["libtorch_version"].
void record_software(nlohmann::json& record, const torch::Device& device);

}  // namespace fm
