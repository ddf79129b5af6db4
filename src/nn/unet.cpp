#include "nn/unet.h"

#include <algorithm>
#include <string>

#include "kernels/kernels.h"
#include "util/error.h"

namespace fm {
namespace F = torch::nn::functional;

namespace {

Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1) {
  return Conv2d(torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2));
}

// ADM initialises the last layer of every residual branch to zero, so each block starts as the identity.
template <class M>
M zeroed(M m) {
  torch::NoGradGuard g;
  for (auto& p : m->parameters()) p.zero_();
  return m;
}

constexpr int64_t kGroups = GroupNorm32Impl::kGroups;

}  // namespace

DownsampleImpl::DownsampleImpl(int64_t channels, bool use_conv) {
  if (use_conv) conv_ = register_module("conv", conv(channels, channels, 3, 2));
}

torch::Tensor DownsampleImpl::forward(const torch::Tensor& x) {
  return conv_ ? conv_(x) : torch::avg_pool2d(x, {2, 2}, {2, 2});
}

UpsampleImpl::UpsampleImpl(int64_t channels, bool use_conv) {
  if (use_conv) conv_ = register_module("conv", conv(channels, channels, 3));
}

torch::Tensor UpsampleImpl::forward(const torch::Tensor& x) {
  auto h = F::interpolate(x, F::InterpolateFuncOptions()
                                 .scale_factor(std::vector<double>{2.0, 2.0})
                                 .mode(torch::kNearest));
  return conv_ ? conv_(h) : h;
}

ResBlockImpl::ResBlockImpl(const ResBlockOptions& o) : o_(o) {
  in_norm_ = register_module("in_norm", GroupNorm32(o.in_channels, /*then_silu=*/true));
  in_conv_ = register_module("in_conv", conv(o.in_channels, o.out_channels, 3));
  emb_proj_ = register_module("emb_proj", torch::nn::Linear(o.emb_channels, (o.scale_shift ? 2 : 1) * o.out_channels));
  // With scale-shift the SiLU comes after the modulation: GN(h) * (1 + scale) + shift.
  out_norm_ = register_module("out_norm", GroupNorm32(o.out_channels, /*then_silu=*/!o.scale_shift));
  out_conv_ = register_module("out_conv", zeroed(conv(o.out_channels, o.out_channels, 3)));
  if (o.in_channels != o.out_channels) skip_ = register_module("skip", conv(o.in_channels, o.out_channels, 1));
}

torch::Tensor ResBlockImpl::forward(const torch::Tensor& x_in, const torch::Tensor& emb) {
  auto x = x_in;
  auto h = in_norm_(x);
  if (o_.updown != 0) {
    // The resampling sits between the activation and the conv, and is applied to the skip path as well.
    auto resample = [&](const torch::Tensor& v) {
      return o_.updown > 0 ? F::interpolate(v, F::InterpolateFuncOptions()
                                                   .scale_factor(std::vector<double>{2.0, 2.0})
                                                   .mode(torch::kNearest))
                           : torch::avg_pool2d(v, {2, 2}, {2, 2});
    };
    h = resample(h);
    x = resample(x);
  }
  h = in_conv_(h);
  auto e = emb_proj_(torch::silu(emb)).to(h.dtype());
  if (o_.scale_shift) {
    auto ss = e.unsqueeze(-1).unsqueeze(-1).chunk(2, 1);
    h = torch::silu(out_norm_(h) * (1 + ss[0]) + ss[1]);
  } else {
    h = out_norm_(h, e);
  }
  h = torch::dropout(h, o_.dropout, is_training());
  h = out_conv_(h);
  return (skip_ ? skip_(x) : x) + h;
}

AttentionBlockImpl::AttentionBlockImpl(int64_t channels, int64_t heads) : heads_(heads) {
  norm_ = register_module("norm", GroupNorm32(channels, /*then_silu=*/false));
  qkv_ = register_module("qkv", conv(channels, 3 * channels, 1));
  proj_out_ = register_module("proj_out", zeroed(conv(channels, channels, 1)));
}

torch::Tensor AttentionBlockImpl::forward(const torch::Tensor& x) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), T = H * W;
  const int64_t d = C / heads_;
  // Channel order per head: q, k, v (guided-diffusion's default). These reshapes are views for both NCHW and
  // channels-last activations. The fused CUDA kernels (flash, memory-efficient) need a unit stride along head_dim,
  // else SDPA falls back to the slow math path: channels-last gives it for free, NCHW pays one copy here.
  auto qkv = qkv_(norm_(x)).reshape({B, heads_, 3, d, T}).transpose(-1, -2);  // [B, heads, 3, T, d]
  auto part = [&](int64_t i) {
    auto p = qkv.select(2, i);
    return p.stride(-1) == 1 ? p : p.contiguous();
  };
  auto a = kernels::attention(part(0), part(1), part(2));  // [B, heads, T, d]
  // Back to [B, C, H, W] with channel = head * d + i, laid out as the input is.
  auto h = a.transpose(1, 2).reshape({B, H, W, C}).permute({0, 3, 1, 2}).contiguous(x.suggest_memory_format());
  return x + proj_out_(h);
}

torch::Tensor UNetStageImpl::forward(torch::Tensor x, const torch::Tensor& emb) {
  if (res_) x = res_(x, emb);
  if (attn_) x = attn_(x);
  if (tail_res_) x = tail_res_(x, emb);
  if (!tail_.is_empty()) x = tail_.forward(x);
  return x;
}

UNetVelocity::UNetVelocity(const UNetConfig& cfg, const std::vector<int64_t>& shape)
    : model_channels_(cfg.model_channels), num_classes_(cfg.num_classes) {
  if (shape.size() != 3) throw InputError("model.type: unet needs image data [C, H, W]");
  const int64_t in_ch = shape[0], height = shape[1], width = shape[2];
  const int64_t levels = static_cast<int64_t>(cfg.channel_mult.size());
  const int64_t emb_ch = 4 * cfg.model_channels;

  // Checks that need the data's shape; the per-key ranges are checked when the config is read.
  for (int64_t m : cfg.channel_mult)
    if ((cfg.model_channels * m) % kGroups)
      throw InputError("model.unet.channel_mult: model_channels x " + std::to_string(m) + " = " +
                       std::to_string(cfg.model_channels * m) + " channels is not a multiple of the " +
                       std::to_string(kGroups) + " GroupNorm groups");
  const int64_t factor = int64_t{1} << (levels - 1);
  if (height % factor || width % factor)
    throw InputError("model.unet.channel_mult: " + std::to_string(levels) + " levels halve the image " +
                     std::to_string(levels - 1) + " times, but " + std::to_string(height) + "x" +
                     std::to_string(width) + " is not divisible by " + std::to_string(factor));
  // Attention resolutions are feature-map widths (guided-diffusion's image_size / ds, image_size = W).
  for (int64_t r : cfg.attention_resolutions) {
    bool found = false;
    for (int64_t l = 0; l < levels; ++l) found |= (width >> l) == r;
    if (!found)
      throw InputError("model.unet.attention_resolutions: " + std::to_string(r) +
                       " is not the width of any level's feature map (" + std::to_string(width) + " halved up to " +
                       std::to_string(levels - 1) + " times)");
  }
  auto heads_for = [&](int64_t ch) {
    if (cfg.num_head_channels == -1) {
      if (ch % cfg.num_heads)
        throw InputError("model.unet.num_heads: " + std::to_string(cfg.num_heads) + " does not divide the " +
                         std::to_string(ch) + " channels of an attention block");
      return cfg.num_heads;
    }
    if (ch % cfg.num_head_channels)
      throw InputError("model.unet.num_head_channels: " + std::to_string(cfg.num_head_channels) +
                       " does not divide the " + std::to_string(ch) + " channels of an attention block");
    return ch / cfg.num_head_channels;
  };
  auto attention_at = [&](int64_t ds) {
    const auto& a = cfg.attention_resolutions;
    return std::find(a.begin(), a.end(), width / ds) != a.end();
  };
  auto res_block = [&](int64_t in, int64_t out, int updown = 0) {
    ResBlockOptions o;
    o.in_channels = in;
    o.out_channels = out;
    o.emb_channels = emb_ch;
    o.dropout = cfg.dropout;
    o.scale_shift = cfg.use_scale_shift_norm;
    o.updown = updown;
    return ResBlock(o);
  };

  time_fc1_ = register_module("time_fc1", torch::nn::Linear(cfg.model_channels, emb_ch));
  time_fc2_ = register_module("time_fc2", torch::nn::Linear(emb_ch, emb_ch));
  if (cfg.second_time) {
    interval_fc1_ = register_module("interval_fc1", torch::nn::Linear(cfg.model_channels, emb_ch));
    interval_fc2_ = register_module("interval_fc2", torch::nn::Linear(emb_ch, emb_ch));
  }
  if (num_classes_ > 0) {
    // Row num_classes is the null label of classifier-free guidance. As in flow_matching it is the padding row:
    // zero and untrained, so the unconditional model sees the time embedding alone.
    label_emb_ = register_module(
        "label_emb", torch::nn::Embedding(torch::nn::EmbeddingOptions(num_classes_ + 1, emb_ch).padding_idx(num_classes_)));
  }

  int64_t ch = cfg.model_channels * cfg.channel_mult[0];
  const int64_t stem_ch = ch;
  input_conv_ = register_module("input_conv", conv(in_ch, ch, 3));
  std::vector<int64_t> skip_ch = {ch};
  auto in_list = register_module("input_blocks", torch::nn::ModuleList());
  int64_t ds = 1;
  for (int64_t level = 0; level < levels; ++level) {
    const int64_t out = cfg.model_channels * cfg.channel_mult[level];
    for (int64_t i = 0; i < cfg.num_res_blocks; ++i) {
      UNetStage s;
      s->set_res(res_block(ch, out));
      ch = out;
      if (attention_at(ds)) s->set_attn(AttentionBlock(ch, heads_for(ch)));
      input_blocks_.push_back(s);
      skip_ch.push_back(ch);
    }
    if (level != levels - 1) {
      UNetStage s;
      if (cfg.resblock_updown)
        s->set_tail("down", res_block(ch, ch, -1));
      else
        s->set_tail("down", Downsample(ch, cfg.conv_resample));
      input_blocks_.push_back(s);
      skip_ch.push_back(ch);
      ds *= 2;
    }
  }
  for (auto& s : input_blocks_) in_list->push_back(s);

  middle_ = register_module("middle", UNetStage());
  middle_->set_res(res_block(ch, ch));
  middle_->set_attn(AttentionBlock(ch, heads_for(ch)));
  middle_->set_tail("res2", res_block(ch, ch));

  auto out_list = register_module("output_blocks", torch::nn::ModuleList());
  for (int64_t level = levels - 1; level >= 0; --level) {
    const int64_t out = cfg.model_channels * cfg.channel_mult[level];
    for (int64_t i = 0; i <= cfg.num_res_blocks; ++i) {
      UNetStage s;
      s->set_res(res_block(ch + skip_ch.back(), out));
      skip_ch.pop_back();
      ch = out;
      if (attention_at(ds)) s->set_attn(AttentionBlock(ch, heads_for(ch)));
      if (level > 0 && i == cfg.num_res_blocks) {
        if (cfg.resblock_updown)
          s->set_tail("up", res_block(ch, ch, +1));
        else
          s->set_tail("up", Upsample(ch, cfg.conv_resample));
        ds /= 2;
      }
      output_blocks_.push_back(s);
    }
  }
  for (auto& s : output_blocks_) out_list->push_back(s);

  out_norm_ = register_module("out_norm", GroupNorm32(ch, /*then_silu=*/true));
  out_conv_ = register_module("out_conv", zeroed(conv(stem_ch, in_ch, 3)));
}

torch::Tensor UNetVelocity::embedding(const torch::Tensor& t, const torch::Tensor& interval,
                                      const torch::Tensor& labels, int64_t batch) {
  // t in [0, 1] (noise at 0, data at 1) goes into the embedding as it is, as flow_matching and torchcfm feed it; so
  // does the interval r - t in [0, 1].
  auto mlp = [&](torch::nn::Linear& fc1, torch::nn::Linear& fc2, const torch::Tensor& s) {
    auto e = timestep_embedding(s.reshape({-1}).expand({batch}), model_channels_).to(fc1->weight.dtype());
    return fc2(torch::silu(fc1(e)));
  };
  auto emb = mlp(time_fc1_, time_fc2_, t);
  if (interval.defined()) emb = emb + mlp(interval_fc1_, interval_fc2_, interval);
  if (num_classes_ > 0) {
    auto y = labels.defined() ? labels.to(torch::kLong)
                              : torch::full({batch}, num_classes_, torch::dtype(torch::kLong).device(emb.device()));
    emb = emb + label_emb_(y);
  }
  return emb;
}

torch::Tensor UNetVelocity::body(const torch::Tensor& x, const torch::Tensor& emb) {
  std::vector<torch::Tensor> skips;
  skips.reserve(input_blocks_.size() + 1);
  auto h = input_conv_(x);
  skips.push_back(h);
  for (auto& s : input_blocks_) {
    h = s(h, emb);
    skips.push_back(h);
  }
  h = middle_(h, emb);
  for (auto& s : output_blocks_) {
    h = s(torch::cat({h, skips.back()}, 1), emb);
    skips.pop_back();
  }
  return out_conv_(out_norm_(h));
}

torch::Tensor UNetVelocity::forward(const torch::Tensor& t, const torch::Tensor& x, const torch::Tensor& labels) {
  if (has_second_time()) return forward_mean(t, t, x, labels);
  return body(x, embedding(t, {}, labels, x.size(0)));
}

torch::Tensor UNetVelocity::forward_mean(const torch::Tensor& t, const torch::Tensor& r, const torch::Tensor& x,
                                         const torch::Tensor& labels) {
  if (!has_second_time()) return VelocityField::forward_mean(t, r, x, labels);
  return body(x, embedding(t, r - t, labels, x.size(0)));
}

std::shared_ptr<VelocityField> make_unet_velocity(const UNetConfig& cfg, const std::vector<int64_t>& shape) {
  return std::make_shared<UNetVelocity>(cfg, shape);
}

}  // namespace fm
