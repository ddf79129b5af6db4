#include "interop/model_import.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint.h"
#include "train/adamw.h"
#include "data/dataset.h"
#include "interop/safetensors.h"
#include "interop/state_dict.h"
#include "interop/torch_file.h"
#include "interop/torchcfm_unet.h"
#include "io/file_util.h"
#include "nn/velocity_field.h"
#include "util/error.h"

namespace fm {
namespace {

// What a weights file holds, whatever its format.
struct LoadedWeights {
  std::map<std::string, torch::Tensor> model, ema;  // ema empty: the file has one set of weights
  std::map<std::string, std::string> metadata;
  int64_t step = 0;
};

LoadedWeights read_weights(const std::string& path) {
  LoadedWeights w;
  if (is_safetensors_path(path)) {
    auto st = read_safetensors(path);
    for (auto& [k, v] : st.tensors) w.model[k] = v;
    w.metadata = st.metadata;
    if (auto it = w.metadata.find("fm_step"); it != w.metadata.end()) {
      try {
        w.step = std::stoll(it->second);
      } catch (const std::exception&) {
        throw file_error(path, "fm_step metadata is not an integer: " + it->second);
      }
    }
    return w;
  }
  auto root = load_torch_file(path);
  const PyValue* net = root->get("net_model");
  const PyValue* ema = root->get("ema_model");
  if (!net && !ema) {
    w.model = tensor_dict(*root, path, "the file");  // a bare state_dict
    return w;
  }
  w.model = tensor_dict(net ? *net : *ema, path, net ? "net_model" : "ema_model");
  if (net && ema) w.ema = tensor_dict(*ema, path, "ema_model");
  if (const PyValue* s = root->get("step"); s && s->kind == PyValue::Kind::Int) w.step = s->i;
  return w;
}

}  // namespace

ImportResult import_weights(const ImportOptions& o) {
  if (o.from != "torchcfm" && o.from != "fm") throw InputError("--from: " + o.from + " is not torchcfm or fm");
  LoadedWeights w = read_weights(o.weights);

  Config cfg;
  if (!o.config.empty()) {
    cfg = load_config(o.config, o.sets);
  } else if (auto it = w.metadata.find("fm_config"); it != w.metadata.end()) {
    try {
      auto doc = nlohmann::json::parse(it->second);
      apply_overrides(doc, o.sets);
      cfg = config_from_json(doc, o.weights + " (fm_config)");
    } catch (const nlohmann::json::exception& e) {
      throw file_error(o.weights, std::string("fm_config metadata is not valid JSON: ") + e.what());
    }
  } else {
    throw InputError("--config: required, " + o.weights + " does not carry an fm config");
  }
  if (o.from == "torchcfm" && cfg.model.type != ModelType::unet)
    throw InputError(std::string("model.type: torchcfm weights are a U-Net, the config says ") +
                     name_of(cfg.model.type));

  std::vector<int64_t> shape = o.shape;
  if (shape.empty()) {
    if (auto it = w.metadata.find("fm_sample_shape"); it != w.metadata.end()) {
      try {
        shape = nlohmann::json::parse(it->second).get<std::vector<int64_t>>();
      } catch (const nlohmann::json::exception& e) {
        throw file_error(o.weights, "fm_sample_shape metadata is not a list of integers");
      }
    } else {
      // The data set fixes the network's input shape (and whether it has labels); loading it checks both.
      shape = load_dataset(cfg.data, torch::kCPU).sample_shape();
    }
  }

  auto model = make_velocity_field(cfg.model, cfg.path, shape);
  auto ema = make_velocity_field(cfg.model, cfg.path, shape);
  auto load = [&](torch::nn::Module& m, const std::map<std::string, torch::Tensor>& sd, const std::string& what) {
    const std::string source = o.weights + (what.empty() ? "" : " (" + what + ")");
    if (o.from == "torchcfm")
      load_torchcfm_state(m, sd, source);
    else
      load_named_tensors(m, sd, own_names(m), source);
  };
  const bool separate = !w.ema.empty();
  load(*model, w.model, separate ? "net_model" : "");
  load(*ema, separate ? w.ema : w.model, separate ? "ema_model" : "");

  // fm train --resume needs an optimizer: a fresh AdamW with the config's settings. There is no data position to
  // keep; the resume starts a fresh epoch.
  AdamW optimizer(model->parameters(), {cfg.train.betas[0], cfg.train.betas[1], cfg.train.eps, cfg.train.weight_decay});
  if (auto dir = std::filesystem::path(o.out).parent_path(); !dir.empty()) make_dirs(dir.string());
  // The data it was trained on is unknown (DataIdentity{}): a resume takes the config's data from a fresh epoch.
  save_checkpoint(o.out, {&cfg, w.step, shape, DataIdentity{}, model.get(), ema.get(), &optimizer, nullptr, {}});
  ImportResult r;
  r.step = w.step;
  r.parameters = parameter_count(*model);
  r.separate_ema = separate;
  return r;
}

}  // namespace fm
