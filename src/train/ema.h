#pragma once
// Exponential moving average of a model's weights, kept in a second instance of the same network so that it can be
// saved, loaded and run like the model itself.
#include <torch/torch.h>

namespace fm {

class Ema {
 public:
  Ema(torch::nn::Module& model, torch::nn::Module& ema, double decay);
  // ema <- decay * ema + (1 - decay) * model, for every parameter; buffers are copied.
  void update();
  // The same, unless found_inf (a float32 device scalar from the non-finite guard) is 1: then the average stays as
  // it is (its weight 1 - decay is multiplied by 1 - found_inf on the device, so skipping needs no host sync).
  void update(const torch::Tensor& found_inf);
  // Sets the average to the model's current weights.
  void reset();

 private:
  std::vector<torch::Tensor> model_params_, ema_params_, model_buffers_, ema_buffers_;
  double decay_;
};

}  // namespace fm
