#pragma once
// fm's ADM U-Net (src/nn/unet.h) under the names and shapes of torchcfm's UNetModel / UNetModelWrapper
// (torchcfm.models.unet.unet, the guided-diffusion layout): the one place that knows how the two map onto each other.
// The two networks compute the same function; they differ only in
//   - names: fm keeps the stem conv apart (input_conv = input_blocks.0.0) and names the parts of each stage
//     (res / attn / down / up) and of each ResBlock (in_norm = in_layers.0, ...);
//   - the attention's 1x1 projections: conv2d [O, I, 1, 1] in fm, conv1d [O, I, 1] in torchcfm;
//   - the class embedding: fm has one more row, the null label of classifier-free guidance, a padding index (zero,
//     never trained): the unconditional model is the network without a class embedding. For a network trained with
//     label dropout (model.unet.class_dropout > 0) the row goes to torchcfm as one more class, num_classes + 1,
//     whose last label then gives the unconditional model; without label dropout it is left out.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "config/config.h"

namespace fm {

// Every parameter of `unet` (an fm U-Net) paired with its torchcfm state_dict name, in fm's order.
std::vector<std::pair<std::string, std::string>> torchcfm_names(const torch::nn::Module& unet);

// Whether a network of `cfg` was trained to use the null label, whose row then goes to torchcfm as one more class.
bool keeps_null_label(const UNetConfig& cfg);

// fm's U-Net tensors under torchcfm's names and shapes; the null label's row only when `null_label`.
std::vector<std::pair<std::string, torch::Tensor>> to_torchcfm_state(const torch::nn::Module& unet, bool null_label);

// Copies a torchcfm state_dict into `unet`. All names must match both ways and every shape must agree (after the
// layout changes above); otherwise throws InputError "source: ..." listing the first few missing, unexpected and
// wrongly shaped tensors. A "module." prefix (a model saved inside torch.nn.DataParallel) is accepted.
void load_torchcfm_state(torch::nn::Module& unet, const std::map<std::string, torch::Tensor>& state,
                         const std::string& source);

// The keyword arguments of torchcfm's UNetModelWrapper that build the same network as `cfg` for data of `shape`
// {C, H, W} (num_classes counts the null label where keeps_null_label). Throws InputError naming the model.unet key that UNetModelWrapper cannot express.
nlohmann::json torchcfm_wrapper_kwargs(const UNetConfig& cfg, const std::vector<int64_t>& shape);

}  // namespace fm
