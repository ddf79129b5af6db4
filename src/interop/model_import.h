#pragma once
// `fm import`: weights trained elsewhere as an fm checkpoint that fm sample, fm eval-nll and fm train --resume take.
//   --from torchcfm: a torchcfm training checkpoint (the dict its examples/images/cifar10/train_cifar10.py saves with
//     torch.save: net_model, ema_model, sched, optim, step), a bare UNetModelWrapper state_dict, or a .safetensors
//     file under torchcfm's names (what fm export writes for a U-Net);
//   --from fm: a .safetensors file under fm's own parameter names (what fm export writes for the 2-D MLP).
// The network comes from the config (--config, else the fm_config a file exported by fm carries). The optimizer
// starts fresh (torchcfm's Adam moments are not carried over) and the step is the file's, 0 when it has none.
#include <string>
#include <vector>

namespace fm {

struct ImportOptions {
  std::string from = "torchcfm";       // torchcfm | fm
  std::string weights;                 // .pt / .pth (torch.save) or .safetensors
  std::string config;                  // fm config file; optional when the weights carry fm_config
  std::vector<std::string> sets;       // --set overrides of the config
  std::vector<int64_t> shape;          // sample shape {C, H, W} or {2}; empty: from the file or the config's data
  std::string out;                     // the fm checkpoint to write
};

struct ImportResult {
  int64_t step = 0;
  int64_t parameters = 0;
  bool separate_ema = false;  // the file had both raw and EMA weights
};

ImportResult import_weights(const ImportOptions& o);

}  // namespace fm
