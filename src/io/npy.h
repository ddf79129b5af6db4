#pragma once
// NumPy's .npy and .npz formats (format versions 1-3; .npz members stored or deflated, with zip64 extents as numpy
// writes them). Readers check every length against the file before reading and never read past it.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace fm {

// Parses one .npy image held in memory; `what` names it in errors ("file.npz: member x.npy").
torch::Tensor parse_npy(const uint8_t* data, size_t size, const std::string& what);
// Serialises a contiguous CPU tensor (uint8, int32, int64, float32, float64, bool) as .npy (format 1.0).
std::string npy_bytes(const torch::Tensor& t);

torch::Tensor read_npy(const std::string& path);
void write_npy(const std::string& path, const torch::Tensor& t);

// Reads the named arrays (all when `names` is empty) of an .npz; keys are without the ".npy" suffix.
std::map<std::string, torch::Tensor> read_npz(const std::string& path, const std::vector<std::string>& names = {});
// Lists the array names of an .npz without reading them.
std::vector<std::string> npz_keys(const std::string& path);
// Writes an uncompressed .npz atomically (zip64 extents where a member or offset passes 4 GiB).
void write_npz(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& arrays);

// An array's shape as the readers' errors write it: "[2, 3, 4]".
std::string shape_string(const torch::Tensor& t);

}  // namespace fm
