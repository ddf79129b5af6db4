#pragma once
// Loading named tensors from another tool into an fm module: strict both ways, with one error that lists what differs.
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace fm {

// Turns a tensor as stored (under some name) into the layout of fm parameter `fm_name`; `like` is that parameter.
// Returns the tensor unchanged when no change applies.
using LayoutFn = std::function<torch::Tensor(const std::string& fm_name, const torch::Tensor& stored,
                                             const torch::Tensor& like)>;

// For each pair (fm parameter name, stored name), copies state[stored name] into that parameter of `m`. Every
// parameter must be found, every stored tensor used, every shape agree and every tensor be floating point; otherwise
// throws InputError "source: ..." naming the first few missing, unexpected and wrongly shaped tensors.
void load_named_tensors(torch::nn::Module& m, const std::map<std::string, torch::Tensor>& state,
                        const std::vector<std::pair<std::string, std::string>>& names, const std::string& source,
                        const LayoutFn& layout = {});

// fm's own names: each parameter of `m` paired with itself.
std::vector<std::pair<std::string, std::string>> own_names(const torch::nn::Module& m);

}  // namespace fm
