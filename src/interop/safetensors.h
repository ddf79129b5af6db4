#pragma once
// The safetensors file format (huggingface/safetensors): an 8-byte little-endian header length, a JSON header that maps
// each tensor name to {dtype, shape, data_offsets} (plus an optional "__metadata__" object of string -> string), then
// the tensors' raw little-endian bytes, packed without gaps in the order of their offsets.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace fm {

struct SafeTensors {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;  // in file order
  std::map<std::string, std::string> metadata;
};

// Writes `st` to `path` atomically (temporary file, then rename). Tensors are written from the CPU, contiguous.
void write_safetensors(const std::string& path, const SafeTensors& st);

// Reads `path`, checking every size and offset against the file (products checked for overflow); tensors are returned
// on the CPU. Throws InputError naming the file and the offending tensor or field (LibTorch's errors inside the reader
// too).
SafeTensors read_safetensors(const std::string& path);

// True when `path` ends in ".safetensors".
bool is_safetensors_path(const std::string& path);

}  // namespace fm
