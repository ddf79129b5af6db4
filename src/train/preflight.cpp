#include "train/preflight.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "train/lr_schedule.h"
#include "util/error.h"

namespace fm {
namespace {

using json = nlohmann::json;

// "key: A in the checkpoint, B here" for every leaf that differs between two JSON documents.
void differences(const json& ckpt, const json& here, const std::string& key, std::vector<std::string>& out) {
  if (ckpt.is_object() && here.is_object()) {
    std::vector<std::string> keys;
    for (const auto& [k, v] : ckpt.items()) keys.push_back(k);
    for (const auto& [k, v] : here.items())
      if (!ckpt.contains(k)) keys.push_back(k);
    for (const auto& k : keys)
      differences(ckpt.value(k, json()), here.value(k, json()), key.empty() ? k : key + "." + k, out);
  } else if (ckpt != here) {
    out.push_back(key + ": " + ckpt.dump() + " in the checkpoint, " + here.dump() + " here");
  }
}

std::string joined(const std::vector<std::string>& parts) {
  std::string s;
  for (const auto& p : parts) s += (s.empty() ? "" : "; ") + p;
  return s;
}

// The keys that shape the network: its type and that type's section.
json model_keys(const ModelConfig& m) {
  Config c;
  c.model = m;
  json all = to_json(c)["model"];
  const char* type = name_of(m.type);
  return {{"model", {{"type", all["type"]}, {type, all[type]}}}};
}

// The keys that decide what the network learns: the target, the path's schedule with the keys its type reads, the
// coupling with its keys, the time sampler with its parameters, and the objective with its keys. (The class dropout
// is a model.unet key.)
json objective_keys(const Config& c) {
  json j = to_json(c);
  json path = {{"type", j["path"]["type"]}, {"coupling", j["path"]["coupling"]}};
  auto take = [&](std::initializer_list<const char*> keys) {
    for (const char* k : keys) path[k] = j["path"][k];
  };
  switch (c.path.type) {
    case PathType::cond_ot: take({"sigma_min"}); break;
    case PathType::vp: take({"beta_min", "beta_max"}); break;
    case PathType::polynomial: take({"poly_n"}); break;
    case PathType::cosine:
    case PathType::linear_vp:
    case PathType::torchcfm_vp: break;
  }
  switch (c.path.coupling) {
    case Coupling::independent:
    case Coupling::ot:
    case Coupling::pairs: break;
    case Coupling::sinkhorn: take({"ot_reg", "sinkhorn_iters"}); break;
    case Coupling::sb: take({"sb_sigma", "sinkhorn_iters"}); break;
  }
  json time = {{"sampler", j["time"]["sampler"]}};
  if (c.time.sampler == TimeSampler::logit_normal) time["loc"] = j["time"]["loc"], time["scale"] = j["time"]["scale"];
  if (c.time.sampler == TimeSampler::u_shaped) time["u_shaped_a"] = j["time"]["u_shaped_a"];
  json loss = {{"type", j["loss"]["type"]}};
  if (c.loss.type == LossType::pseudo_huber) loss["huber_c"] = j["loss"]["huber_c"];
  json objective = {{"type", j["objective"]["type"]}};
  if (c.objective.type == ObjectiveType::meanflow) objective["meanflow"] = j["objective"]["meanflow"];
  return {{"model", {{"target", j["model"]["target"]}}}, {"path", path}, {"time", time}, {"loss", loss},
          {"objective", objective}};
}

}  // namespace

void check_data_fits_model(const Config& cfg, const Dataset& data) {
  const int64_t nc = conditioning_of(cfg.model).num_classes;
  if (nc == 0) return;
  if (!data.labels.defined()) throw InputError("model.unet.num_classes: " + data.name + " has no class labels");
  const int64_t max_label = data.labels.numel() ? data.labels.max().item<int64_t>() : -1;
  const int64_t classes = std::max(data.num_classes, max_label + 1);
  if (classes > nc)
    throw InputError("model.unet.num_classes: " + std::to_string(nc) + ", but " + data.name + " has " +
                     std::to_string(classes) + " classes (labels up to " + std::to_string(max_label) + "; label " +
                     std::to_string(nc) + " is the null label of guidance): set model.unet.num_classes=" +
                     std::to_string(classes));
  if (classes < nc)
    spdlog::warn("model.unet.num_classes is {} but {} has {} classes: labels {}..{} are never trained", nc, data.name,
                 classes, classes, nc - 1);
}

void check_pairs_coupling(const Config& cfg, const Dataset& data) {
  if (data.is_pairs() && cfg.path.coupling != Coupling::pairs)
    throw InputError(std::string("path.coupling: ") + data.name + " holds fm reflow's pairs, which train with "
                     "path.coupling = pairs (got \"" + name_of(cfg.path.coupling) + "\")");
  if (!data.is_pairs() && cfg.path.coupling == Coupling::pairs)
    throw InputError("path.coupling: pairs trains on fm reflow's pairs (data.path = pairs:DIR), not on " + data.name);
}

void check_init_from(const CheckpointReader& ck, const Config& cfg, const std::vector<int64_t>& sample_shape) {
  std::vector<std::string> diff;
  differences(model_keys(ck.config().model), model_keys(cfg.model), "", diff);
  if (ck.config().model.target != cfg.model.target)
    diff.push_back(std::string("model.target: \"") + name_of(ck.config().model.target) + "\" in the checkpoint, \"" +
                   name_of(cfg.model.target) + "\" here");
  if (!diff.empty())
    throw InputError("train.init_from: " + ck.path() + " holds another model than this run's: " + joined(diff));
  if (ck.sample_shape() != sample_shape)
    throw InputError("train.init_from: " + ck.path() + " holds a model of samples " + json(ck.sample_shape()).dump() +
                     ", this run's data has " + json(sample_shape).dump());
}

void check_resume_config(const CheckpointReader& ck, const Config& cfg) {
  if (cfg.train.steps < ck.step())
    throw InputError("train.steps: " + std::to_string(cfg.train.steps) + " is below the step of " + ck.path() + " (" +
                     std::to_string(ck.step()) + "); set train.steps to at least " + std::to_string(ck.step()) +
                     " to continue it");
  std::vector<std::string> diff;
  differences(model_keys(ck.config().model), model_keys(cfg.model), "", diff);
  if (!diff.empty()) throw file_error(ck.path(), "was trained with another model than this run's: " + joined(diff));
  differences(objective_keys(ck.config()), objective_keys(cfg), "", diff);
  if (diff.empty()) return;
  if (!cfg.train.resume_new_objective)
    throw file_error(ck.path(), "was trained with another objective than this run's: " + joined(diff) +
                                    "; set train.resume_new_objective=true to continue it with this one");
  spdlog::warn("continuing {} with another objective (train.resume_new_objective): {}", ck.path(), joined(diff));
}

bool check_resume_data(const CheckpointReader& ck, const Config& cfg, const Dataset& data,
                       const std::vector<int64_t>& sample_shape) {
  if (ck.data().name.empty()) {  // written by fm import: the weights came without their data
    if (ck.sample_shape() != sample_shape)
      throw file_error(ck.path(), "holds a model of another sample shape than this run's data");
    spdlog::info("{} does not record its training data (imported weights): training starts a fresh epoch", ck.path());
    return true;
  }
  auto identity = [](const DataConfig& d, const DataIdentity& id, const std::vector<int64_t>& shape) {
    Config c;
    c.data = d;
    json j = to_json(c)["data"];
    j.erase("hflip");  // augmentation, not data
    return json{{"data", j}, {"images", id.size}, {"classes", id.num_classes}, {"sample shape", shape}};
  };
  std::vector<std::string> diff;
  differences(identity(ck.config().data, ck.data(), ck.sample_shape()),
              identity(cfg.data, {data.name, data.size(), data.num_classes}, sample_shape), "", diff);
  if (diff.empty()) return false;
  auto shape_it = std::find_if(diff.begin(), diff.end(), [](const std::string& d) { return d.rfind("sample shape", 0) == 0; });
  if (shape_it != diff.end()) throw file_error(ck.path(), "was trained on samples of another shape: " + *shape_it);
  if (!cfg.train.resume_new_data)
    throw file_error(ck.path(), "was trained on other data than this run's: " + joined(diff) +
                                    "; set train.resume_new_data=true to continue on this data from a fresh epoch");
  spdlog::warn("continuing {} on other data ({}): the batch sampler starts a fresh epoch", ck.path(), joined(diff));
  return true;
}

Config resumed_config(const CheckpointReader& ck, const Config& cfg) {
  Config out = cfg;
  const TrainConfig& before = ck.config().train;
  out.train.earlier_steps = before.earlier_steps;
  if (before.steps != cfg.train.steps) {
    out.train.earlier_steps.push_back(before.steps);
    spdlog::warn("train.steps changed from {} (checkpoint) to {} at step {}: the learning-rate schedule is reshaped "
                 "from here, lr {:.3e} -> {:.3e} (recorded in config.json as train.earlier_steps)",
                 before.steps, cfg.train.steps, ck.step(), lr_at(before, ck.step()), lr_at(cfg.train, ck.step()));
  }
  return out;
}

}  // namespace fm
