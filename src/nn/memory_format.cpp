#include "nn/memory_format.h"

#include <ATen/Parallel.h>

#include "nn/group_norm_silu.h"

namespace fm {

bool prefers_channels_last(const torch::Device& device, const std::vector<int64_t>& sample_shape, bool training) {
  if (sample_shape.size() != 3) return false;
  // CUDA sampling keeps NCHW: it has not been measured against channels-last on a GPU.
  if (device.is_cuda()) return training;
  if (!device.is_cpu() || !fused_cpu_group_norm_available()) return false;
  // Training on the CPU also runs oneDNN's weight-gradient convolutions, whose channels-last kernel scales worse with
  // threads than its blocked one (smoke U-Net, 1 -> 2 threads: 254 -> ~205 ms a step against 232 -> 170). Measured:
  // channels-last 10% faster at one thread, level at two; above that NCHW keeps the lead it is expected to have.
  return !training || at::get_num_threads() <= kMaxChannelsLastTrainingThreads;
}

void weights_to_channels_last(torch::nn::Module& model) {
  for (auto& p : model.parameters())
    if (p.dim() == 4) p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
}

}  // namespace fm
