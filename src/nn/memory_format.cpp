#include "nn/memory_format.h"

#include "nn/group_norm_silu.h"

namespace fm {

bool prefers_channels_last(const torch::Device& device, const std::vector<int64_t>& sample_shape, bool training) {
  if (sample_shape.size() != 3) return false;
  // CUDA sampling keeps NCHW: it has not been measured against channels-last on a GPU.
  if (device.is_cuda()) return training;
  // Training and inference alike. Training used to stay NCHW above two threads, because oneDNN's channels-last
  // weight-gradient kernel scaled worse than its blocked one; the trained 3x3 convolutions now take Winograd's
  // (nn/conv2d.h), which reads channels-last and would copy NCHW tensors to it and back. Smoke U-Net step at two
  // threads: channels-last 524/511 ms, NCHW 861/707.
  return device.is_cpu() && fused_cpu_group_norm_available();
}

void weights_to_channels_last(torch::nn::Module& model) {
  for (auto& p : model.parameters())
    if (p.dim() == 4) p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
}

}  // namespace fm
