#pragma once
// The ADM U-Net of Dhariwal & Nichol (2021), openai/guided-diffusion `unet.py`, as a velocity field v(t, x[, class]).
// Time t is in [0, 1] with noise at t=0 and data at t=1; it enters the sinusoidal embedding unscaled, as in
// facebookresearch/flow_matching (examples/image) and torchcfm.
//
// Parameter names follow the structure of guided-diffusion (input_blocks / middle / output_blocks with one entry per
// TimestepEmbedSequential there, the stem conv split off as input_conv) with readable leaf names, so a guided-diffusion
// or torchcfm state_dict maps onto this one by renaming alone. The qkv projection uses guided-diffusion's default
// ("legacy") channel order: per head, its q, k and v rows.
#include <vector>

#include "nn/layers.h"
#include "nn/velocity_field.h"

namespace fm {

// Halves the resolution: a stride-2 conv3x3, or 2x2 average pooling without one.
class DownsampleImpl : public torch::nn::Module {
 public:
  DownsampleImpl(int64_t channels, bool use_conv);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  Conv2d conv_{nullptr};
};
TORCH_MODULE(Downsample);

// Doubles the resolution: nearest-neighbour, then a conv3x3 when use_conv.
class UpsampleImpl : public torch::nn::Module {
 public:
  UpsampleImpl(int64_t channels, bool use_conv);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  Conv2d conv_{nullptr};
};
TORCH_MODULE(Upsample);

struct ResBlockOptions {
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t emb_channels = 0;
  double dropout = 0.0;
  bool scale_shift = false;  // FiLM-like: GN(h) * (1 + scale) + shift instead of h + emb
  int updown = 0;            // +1: upsample inside the block, -1: downsample, 0: neither
};

// GN-SiLU-conv, add the embedding (or scale-shift the second norm), GN-SiLU-dropout-conv (zero-initialised, so the
// block starts as its skip path), plus a skip that is the identity or a 1x1 conv when the width changes.
class ResBlockImpl : public torch::nn::Module {
 public:
  explicit ResBlockImpl(const ResBlockOptions& o);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& emb);

 private:
  ResBlockOptions o_;
  GroupNorm32 in_norm_{nullptr}, out_norm_{nullptr};
  Conv2d in_conv_{nullptr}, out_conv_{nullptr}, skip_{nullptr};
  torch::nn::Linear emb_proj_{nullptr};
};
TORCH_MODULE(ResBlock);

// Multi-head self-attention over the H*W positions with a residual connection and a zero-initialised output
// projection, computed by scaled_dot_product_attention on [B, heads, tokens, head_dim] (kernels::attention).
class AttentionBlockImpl : public torch::nn::Module {
 public:
  AttentionBlockImpl(int64_t channels, int64_t heads);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  int64_t heads_;
  GroupNorm32 norm_{nullptr};
  Conv2d qkv_{nullptr}, proj_out_{nullptr};
};
TORCH_MODULE(AttentionBlock);

// One entry of the encoder, middle or decoder, applied in the order res -> attn -> tail, each part optional: a
// ResBlock with optional attention; a resampler alone (the encoder's downsampling entries); a ResBlock and attention
// followed by an upsampler (the last decoder entry of a level); the middle's ResBlock, attention, ResBlock.
class UNetStageImpl : public torch::nn::Module {
 public:
  void set_res(ResBlock m) { res_ = register_module("res", m); }
  void set_attn(AttentionBlock m) { attn_ = register_module("attn", m); }
  void set_tail(const std::string& name, ResBlock m) { tail_res_ = register_module(name, m); }
  template <class M>
  void set_tail(const std::string& name, M m) {
    tail_ = torch::nn::AnyModule(register_module(name, m));
  }
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& emb);

 private:
  ResBlock res_{nullptr}, tail_res_{nullptr};
  AttentionBlock attn_{nullptr};
  torch::nn::AnyModule tail_;
};
TORCH_MODULE(UNetStage);

class UNetVelocity : public VelocityField {
 public:
  // shape is {C, H, W}; throws InputError naming the model.unet key when the config does not fit it.
  UNetVelocity(const UNetConfig& cfg, const std::vector<int64_t>& shape);
  // t: [B] in [0, 1] (noise at 0, data at 1); x: [B, C, H, W]; labels: [B] int64 in [0, num_classes], where
  // num_classes is the null label, or undefined (= the null label when class-conditional).
  // With model.unet.second_time, the velocity at t (forward_mean at r = t).
  torch::Tensor forward(const torch::Tensor& t, const torch::Tensor& x, const torch::Tensor& labels) override;
  // With model.unet.second_time: the average velocity from t to r (nn/velocity_field.h). The interval r - t gets an
  // embedding of its own (sinusoids and a two-layer MLP like t's), added to t's, as MeanFlow's code conditions its
  // DiT on (t, t - r) in its times.
  torch::Tensor forward_mean(const torch::Tensor& t, const torch::Tensor& r, const torch::Tensor& x,
                             const torch::Tensor& labels) override;
  bool has_second_time() const override { return static_cast<bool>(interval_fc1_); }
  int64_t num_classes() const override { return num_classes_; }

 private:
  // The conditioning vector: t's embedding, plus the interval's when defined, plus the class's.
  torch::Tensor embedding(const torch::Tensor& t, const torch::Tensor& interval, const torch::Tensor& labels,
                          int64_t batch);
  torch::Tensor body(const torch::Tensor& x, const torch::Tensor& emb);

  int64_t model_channels_;
  int64_t num_classes_;
  torch::nn::Linear time_fc1_{nullptr}, time_fc2_{nullptr};
  torch::nn::Linear interval_fc1_{nullptr}, interval_fc2_{nullptr};
  torch::nn::Embedding label_emb_{nullptr};
  Conv2d input_conv_{nullptr}, out_conv_{nullptr};
  std::vector<UNetStage> input_blocks_, output_blocks_;
  UNetStage middle_{nullptr};
  GroupNorm32 out_norm_{nullptr};
};

std::shared_ptr<VelocityField> make_unet_velocity(const UNetConfig& cfg, const std::vector<int64_t>& shape);

}  // namespace fm
