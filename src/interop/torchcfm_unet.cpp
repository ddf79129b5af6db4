#include "interop/torchcfm_unet.h"

#include <regex>
#include <set>

#include "interop/state_dict.h"
#include "util/error.h"

namespace fm {
namespace {

// A ResBlock's parts: fm's names and the indices of guided-diffusion's Sequentials.
const std::vector<std::pair<std::string, std::string>> kResLeaves = {
    {"in_norm.", "in_layers.0."},   {"in_conv.", "in_layers.2."},   {"emb_proj.", "emb_layers.1."},
    {"out_norm.", "out_layers.0."}, {"out_conv.", "out_layers.3."}, {"skip.", "skip_connection."}};

std::string res_leaf(const std::string& rest, const std::string& name) {
  for (const auto& [fm, cfm] : kResLeaves)
    if (rest.rfind(fm, 0) == 0) return cfm + rest.substr(fm.size());
  throw std::logic_error("torchcfm_names: unknown ResBlock parameter " + name);
}

// The part of a stage after its ResBlock: a resampler (conv: guided-diffusion calls Downsample's conv "op") or a
// ResBlock that resamples (resblock_updown).
std::string tail_leaf(const std::string& kind, const std::string& rest, const std::string& name) {
  if (rest.rfind("conv.", 0) == 0) return (kind == "down" ? "op." : "conv.") + rest.substr(5);
  return res_leaf(rest, name);
}

bool is_attention_proj(const std::string& fm_name) {
  auto ends = [&](const std::string& s) {
    return fm_name.size() >= s.size() && fm_name.compare(fm_name.size() - s.size(), s.size(), s) == 0;
  };
  return ends(".qkv.weight") || ends(".proj_out.weight");
}

}  // namespace

std::vector<std::pair<std::string, std::string>> torchcfm_names(const torch::nn::Module& unet) {
  std::vector<std::string> names;
  for (const auto& p : unet.named_parameters()) names.push_back(p.key());
  std::set<std::string> stages_with_attn;
  static const std::regex stage(R"((input_blocks|output_blocks)\.(\d+)\.(res|attn|down|up)\.(.*))");
  static const std::regex middle(R"(middle\.(res|attn|res2)\.(.*))");
  std::smatch m;
  for (const auto& n : names)
    if (std::regex_match(n, m, stage) && m[3] == "attn") stages_with_attn.insert(m[1].str() + "." + m[2].str());

  static const std::vector<std::pair<std::string, std::string>> fixed = {
      {"time_fc1.", "time_embed.0."}, {"time_fc2.", "time_embed.2."}, {"label_emb.", "label_emb."},
      {"input_conv.", "input_blocks.0.0."}, {"out_norm.", "out.0."}, {"out_conv.", "out.2."}};
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& n : names) {
    std::string cfm;
    for (const auto& [a, b] : fixed)
      if (n.rfind(a, 0) == 0) cfm = b + n.substr(a.size());
    if (cfm.empty() && std::regex_match(n, m, stage)) {
      const std::string blocks = m[1], kind = m[3], rest = m[4];
      const int64_t i = std::stoll(m[2]);
      // guided-diffusion's input_blocks[0] is the stem conv, which fm keeps apart as input_conv.
      const int64_t index = blocks == "input_blocks" ? i + 1 : i;
      // Within a TimestepEmbedSequential: [ResBlock, AttentionBlock?, resampler?]; an encoder resampler stands alone.
      int64_t j = 0;
      if (kind == "attn") j = 1;
      if (kind == "up") j = stages_with_attn.count(blocks + "." + m[2].str()) ? 2 : 1;
      const std::string leaf = kind == "res" ? res_leaf(rest, n) : kind == "attn" ? rest : tail_leaf(kind, rest, n);
      cfm = blocks + "." + std::to_string(index) + "." + std::to_string(j) + "." + leaf;
    } else if (cfm.empty() && std::regex_match(n, m, middle)) {
      const std::string kind = m[1], rest = m[2];
      cfm = kind == "res" ? "middle_block.0." + res_leaf(rest, n)
            : kind == "attn" ? "middle_block.1." + rest
                             : "middle_block.2." + res_leaf(rest, n);
    }
    if (cfm.empty()) throw std::logic_error("torchcfm_names: no torchcfm name for fm parameter " + n);
    out.emplace_back(n, cfm);
  }
  return out;
}

bool keeps_null_label(const UNetConfig& cfg) { return cfg.num_classes > 0 && cfg.class_dropout > 0; }

std::vector<std::pair<std::string, torch::Tensor>> to_torchcfm_state(const torch::nn::Module& unet, bool null_label) {
  auto params = unet.named_parameters();
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& [fm_name, cfm_name] : torchcfm_names(unet)) {
    auto v = params[fm_name].detach();
    if (is_attention_proj(fm_name)) v = v.squeeze(-1);                   // conv2d [O, I, 1, 1] -> conv1d [O, I, 1]
    if (fm_name == "label_emb.weight" && !null_label) v = v.narrow(0, 0, v.size(0) - 1);
    out.emplace_back(cfm_name, v);
  }
  return out;
}

void load_torchcfm_state(torch::nn::Module& unet, const std::map<std::string, torch::Tensor>& state,
                         const std::string& source) {
  // Checkpoints of torchcfm's example trained with --parallel hold DataParallel's "module." prefix on every key.
  std::map<std::string, torch::Tensor> sd;
  for (const auto& [k, v] : state) sd[k.rfind("module.", 0) == 0 ? k.substr(7) : k] = v;
  auto layout = [](const std::string& fm_name, const torch::Tensor& v, const torch::Tensor& like) {
    if (is_attention_proj(fm_name) && v.dim() == 3) return v.unsqueeze(-1);
    if (fm_name == "label_emb.weight" && v.dim() == 2 && v.size(0) + 1 == like.size(0))
      return torch::cat({v, torch::zeros_like(v.narrow(0, 0, 1))});  // the null-label row: zero, as fm starts it
    return v;
  };
  load_named_tensors(unet, sd, torchcfm_names(unet), source, layout);
}

nlohmann::json torchcfm_wrapper_kwargs(const UNetConfig& cfg, const std::vector<int64_t>& shape) {
  if (shape.size() != 3) throw InputError("model.type: only the U-Net exports under torchcfm's names");
  // UNetModelWrapper always builds conv resamplers (guided-diffusion's conv_resample=True).
  if (!cfg.conv_resample)
    throw InputError("model.unet.conv_resample: false has no torchcfm UNetModelWrapper equivalent");
  if (cfg.second_time)
    throw InputError("model.unet.second_time: true (a network of two times, as MeanFlow trains) has no torchcfm "
                     "UNetModelWrapper equivalent");
  // Its attention_resolutions is a comma-separated string of feature-map widths, each turned into the level's
  // downsampling rate width // r; it cannot parse an empty string. A model without attention levels still has the
  // middle block's attention, as fm's does: twice the image width gives rate 0, which no level has (rates start at 1).
  std::string attn;
  for (int64_t r : cfg.attention_resolutions) attn += (attn.empty() ? "" : ",") + std::to_string(r);
  if (attn.empty()) attn = std::to_string(2 * shape[2]);
  nlohmann::json kw = {{"dim", shape},
                       {"num_channels", cfg.model_channels},
                       {"num_res_blocks", cfg.num_res_blocks},
                       {"channel_mult", cfg.channel_mult},
                       {"attention_resolutions", attn},
                       {"num_heads", cfg.num_heads},
                       {"num_head_channels", cfg.num_head_channels},
                       {"use_scale_shift_norm", cfg.use_scale_shift_norm},
                       {"resblock_updown", cfg.resblock_updown},
                       {"dropout", cfg.dropout},
                       {"class_cond", cfg.num_classes > 0}};
  if (cfg.num_classes > 0) kw["num_classes"] = cfg.num_classes + (keeps_null_label(cfg) ? 1 : 0);
  return kw;
}

}  // namespace fm
