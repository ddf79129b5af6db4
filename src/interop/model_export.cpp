#include "interop/model_export.h"

#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint.h"
#include "interop/safetensors.h"
#include "interop/torchcfm_unet.h"
#include "nn/velocity_field.h"
#include "util/error.h"

namespace fm {

ExportResult export_safetensors(const ExportOptions& o) {
  CheckpointReader ck(o.checkpoint, torch::kCPU);
  const auto& cfg = ck.config();
  if (cfg.model.target != Target::velocity)
    throw file_error(o.checkpoint, std::string("predicts model.target '") + name_of(cfg.model.target) +
                                       "'; fm export writes velocity models (the layout torchcfm and fm import read)");
  auto model = make_velocity_field(cfg.model, cfg.path, ck.sample_shape());
  ck.load_module(o.weights == Weights::raw ? "model" : "ema", *model);

  SafeTensors st;
  ExportResult r;
  if (cfg.model.type == ModelType::unet) {
    st.metadata["torchcfm_unet_wrapper"] = torchcfm_wrapper_kwargs(cfg.model.unet, ck.sample_shape()).dump();
    st.tensors = to_torchcfm_state(*model, keeps_null_label(cfg.model.unet));
    if (keeps_null_label(cfg.model.unet)) st.metadata["fm_null_label"] = std::to_string(cfg.model.unet.num_classes);
    r.names = "torchcfm";
  } else {
    for (const auto& p : model->named_parameters()) st.tensors.emplace_back(p.key(), p.value().detach());
    r.names = "fm";
  }
  // safetensors metadata is string -> string: structured values are stored as JSON text.
  st.metadata["format"] = "pt";
  st.metadata["fm_config"] = to_json(cfg).dump();
  st.metadata["fm_sample_shape"] = nlohmann::json(ck.sample_shape()).dump();
  st.metadata["fm_step"] = std::to_string(ck.step());
  st.metadata["fm_weights"] = name_of(o.weights);
  write_safetensors(o.out, st);
  r.tensors = static_cast<int64_t>(st.tensors.size());
  for (const auto& kv : st.tensors) r.parameters += kv.second.numel();
  return r;
}

}  // namespace fm
