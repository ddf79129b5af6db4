#pragma once
// `fm export`: a checkpoint's weights as a .safetensors file that Python loads without fm. The U-Net's tensors go
// under torchcfm's UNetModelWrapper names (see interop/torchcfm_unet.h) with that wrapper's keyword arguments in the
// metadata, so that in Python
//     kw = json.loads(safe_open(path, "pt").metadata()["torchcfm_unet_wrapper"])
//     UNetModelWrapper(**kw).load_state_dict(safetensors.torch.load_file(path))
// rebuilds the same network. The 2-D MLP goes under fm's own parameter names. Either way the metadata also holds
// fm's full config ("fm_config"), the sample shape ("fm_sample_shape"), the step and which weights were exported.
#include <string>

#include "config/choices.h"

namespace fm {

struct ExportOptions {
  std::string checkpoint;
  std::string out;
  Weights weights = Weights::ema;
};

struct ExportResult {
  std::string names;  // "torchcfm" or "fm"
  int64_t tensors = 0;
  int64_t parameters = 0;
};

ExportResult export_safetensors(const ExportOptions& o);

}  // namespace fm
