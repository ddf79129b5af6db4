#include "bench/flops.h"

#include <algorithm>

namespace fm {

namespace {

struct ForwardFlops {
  double total = 0.0;
  double attention_matmuls = 0.0;  // the part in q k^T and a v
};

ForwardFlops count_forward(const UNetConfig& cfg, const std::vector<int64_t>& shape, int64_t batch) {
  const double B = static_cast<double>(batch);
  const int64_t in_ch = shape.at(0);
  int64_t h = shape.at(1), w = shape.at(2);
  const int64_t emb = 4 * cfg.model_channels;
  const int64_t levels = static_cast<int64_t>(cfg.channel_mult.size());
  double flops = 0.0, attention_matmuls = 0.0;

  auto linear = [&](int64_t in, int64_t out) { flops += 2.0 * B * in * out; };
  // At the output resolution (oh, ow).
  auto conv = [&](int64_t in, int64_t out, int64_t k, int64_t oh, int64_t ow) {
    flops += 2.0 * B * out * oh * ow * in * k * k;
  };
  // A ResBlock at input resolution (h, w); updown -1 halves it, +1 doubles it (before in_conv, as the net does).
  auto res_block = [&](int64_t in, int64_t out, int updown = 0) {
    if (updown < 0) h /= 2, w /= 2;
    if (updown > 0) h *= 2, w *= 2;
    conv(in, out, 3, h, w);
    linear(emb, (cfg.use_scale_shift_norm ? 2 : 1) * out);
    conv(out, out, 3, h, w);
    if (in != out) conv(in, out, 1, h, w);
  };
  // Attention over T = h w tokens; the heads split the channels, so q k^T and a v cost 2 T^2 C each per image.
  auto attention = [&](int64_t ch) {
    const double T = static_cast<double>(h * w);
    conv(ch, 3 * ch, 1, h, w);
    flops += 2.0 * 2.0 * B * T * T * ch;
    attention_matmuls += 2.0 * 2.0 * B * T * T * ch;
    conv(ch, ch, 1, h, w);
  };
  // Attention resolutions are feature-map widths, as in the network.
  auto attention_here = [&] {
    const auto& a = cfg.attention_resolutions;
    return std::find(a.begin(), a.end(), w) != a.end();
  };

  for (int e = 0; e < (cfg.second_time ? 2 : 1); ++e) {  // t's embedding MLP, and the interval's
    linear(cfg.model_channels, emb);
    linear(emb, emb);
  }
  int64_t ch = cfg.model_channels * cfg.channel_mult[0];
  const int64_t stem_ch = ch;
  conv(in_ch, ch, 3, h, w);
  std::vector<int64_t> skip_ch = {ch};
  for (int64_t level = 0; level < levels; ++level) {
    const int64_t out = cfg.model_channels * cfg.channel_mult[level];
    for (int64_t i = 0; i < cfg.num_res_blocks; ++i) {
      res_block(ch, out);
      ch = out;
      if (attention_here()) attention(ch);
      skip_ch.push_back(ch);
    }
    if (level != levels - 1) {
      if (cfg.resblock_updown) {
        res_block(ch, ch, -1);
      } else {
        h /= 2, w /= 2;
        if (cfg.conv_resample) conv(ch, ch, 3, h, w);
      }
      skip_ch.push_back(ch);
    }
  }
  res_block(ch, ch);
  attention(ch);
  res_block(ch, ch);
  for (int64_t level = levels - 1; level >= 0; --level) {
    const int64_t out = cfg.model_channels * cfg.channel_mult[level];
    for (int64_t i = 0; i <= cfg.num_res_blocks; ++i) {
      res_block(ch + skip_ch.back(), out);
      skip_ch.pop_back();
      ch = out;
      if (attention_here()) attention(ch);
      if (level > 0 && i == cfg.num_res_blocks) {
        if (cfg.resblock_updown) {
          res_block(ch, ch, +1);
        } else {
          h *= 2, w *= 2;
          if (cfg.conv_resample) conv(ch, ch, 3, h, w);
        }
      }
    }
  }
  conv(stem_ch, in_ch, 3, h, w);
  return {flops, attention_matmuls};
}

}  // namespace

double unet_forward_flops(const UNetConfig& cfg, const std::vector<int64_t>& shape, int64_t batch) {
  return count_forward(cfg, shape, batch).total;
}

double unet_meanflow_train_step_flops(const UNetConfig& cfg, const std::vector<int64_t>& shape, int64_t batch,
                                      int guidance_forwards) {
  const auto f = count_forward(cfg, shape, batch);
  return (4.0 + guidance_forwards) * f.total + f.attention_matmuls;
}

}  // namespace fm
