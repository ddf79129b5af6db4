#pragma once
// Files written by Python's torch.save, both the zip format (the default since torch 1.6) and the legacy format
// before it, read without Python: a small pickle machine for the subset torch.save emits (dicts, OrderedDicts, lists,
// tuples, strings, numbers, tensors), with tensor storages read from the zip records or from the legacy stream.
//
// LibTorch's own torch::pickle_load reads only the zip format and turns every collections.OrderedDict (which is what
// a Python state_dict is) into None, so it cannot read a state_dict; hence this reader.
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace fm {

// A Python value as far as fm needs to see it. Class instances fm does not know (an optimizer's hyper-parameters
// are plain, but e.g. a torch.device or a user object) become kind Object and are otherwise ignored.
struct PyValue {
  enum class Kind { None, Bool, Int, Float, String, Bytes, Tuple, List, Dict, Tensor, Global, Object };
  Kind kind = Kind::None;
  int64_t i = 0;  // Bool, Int (an int beyond 64 bits keeps its low bits and sets big_int)
  bool big_int = false;
  double f = 0;                // Float
  std::string s;               // String, Bytes, Global ("module.name"), Object (its class)
  std::vector<std::shared_ptr<PyValue>> items;                                      // Tuple, List
  std::vector<std::pair<std::shared_ptr<PyValue>, std::shared_ptr<PyValue>>> dict;  // Dict, in insertion order
  torch::Tensor tensor;                                                             // Tensor
  // Kept by load_torch_file: the levels of containers below this value (0 for a leaf), and whether it is an item of a
  // container. It refuses values nested deeper than a limit and changes to a container that is an item, which keeps
  // these exact and rules out a container that contains itself.
  int32_t depth = 0;
  bool contained = false;

  PyValue() = default;
  PyValue(const PyValue&) = default;
  PyValue(PyValue&&) = default;
  PyValue& operator=(const PyValue&) = default;
  PyValue& operator=(PyValue&&) = default;
  // Frees the items it alone owns without recursion: a value of any depth takes one stack frame to free.
  ~PyValue();

  // The entry under a string key of a Dict, or nullptr.
  const PyValue* get(const std::string& key) const;
};
using PyPtr = std::shared_ptr<PyValue>;

// Reads `path`. Tensors are returned on the CPU; tensors that view one storage in the file share it, as in Python.
// Throws InputError naming the file (LibTorch's errors inside the reader too) when it is not a torch.save file, uses
// what this reader does not support, nests containers more than 1000 levels deep or into themselves, or declares sizes
// or storages larger than the file holds.
PyPtr load_torch_file(const std::string& path);

// True when the file is laid out as a torch.save file: a zip archive with a data.pkl record (an .npz is not), or the
// legacy format's pickled magic number.
bool looks_like_torch_file(const std::string& path);

// A Dict of string -> tensor (a state_dict); throws InputError "path: what: ..." when `v` is anything else.
std::map<std::string, torch::Tensor> tensor_dict(const PyValue& v, const std::string& path, const std::string& what);

}  // namespace fm
