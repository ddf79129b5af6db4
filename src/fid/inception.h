#pragma once
// The Inception-v3 that FID is defined with: the TensorFlow graph of Heusel et al. (pt_inception-2015-12-05) as
// mseitzer/pytorch-fid rebuilds it on torchvision's inception_v3 (1008 classes, no aux head), with its two quirks:
// the average pools in the A, C and first E blocks leave the zero padding out of the mean, and the last E block
// max-pools. Only the 2048-d pool3 features are computed; the classifier is not part of the network.
//
// Weights come from scripts/export_fid_inception.py as an .npz of float32 arrays named as in the PyTorch state_dict
// ("Mixed_5b.branch1x1.conv.weight", "Conv2d_1a_3x3.bn.running_var", ...). Nothing is downloaded.
#include <string>

#include <torch/torch.h>

#include "config/choices.h"

namespace fm {

// The network's input from uint8 images [N, 3, H, W] (any device): float32 [N, 3, 299, 299] on `device`.
//  pytorch-fid: x / 255, bilinear resize (align_corners false, no antialiasing), 2x - 1, as pytorch-fid's
//    InceptionV3(resize_input=True, normalize_input=True).
//  clean: clean-fid's "clean" mode: the uint8 values as float32, PIL's bicubic resize of each channel
//    (fid/pil_resize.h), clipped to [0, 255], then (x - 128) / 128, as clean-fid's wrapper of the Inception network
//    scales its input.
torch::Tensor fid_input(const torch::Tensor& images, FidResize resize, const torch::Device& device);

// conv (no bias) -> BatchNorm (eps 0.001, eval) -> ReLU.
struct InceptionConvImpl : torch::nn::Module {
  InceptionConvImpl(int64_t in, int64_t out, std::vector<int64_t> kernel, std::vector<int64_t> stride = {1, 1},
                    std::vector<int64_t> padding = {0, 0});
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
};
TORCH_MODULE(InceptionConv);

// Mixed_5b..d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg-pool (padding not counted)-1x1.
struct InceptionAImpl : torch::nn::Module {
  InceptionAImpl(int64_t in, int64_t pool_features);
  torch::Tensor forward(const torch::Tensor& x);
  InceptionConv branch1x1{nullptr}, branch5x5_1{nullptr}, branch5x5_2{nullptr}, branch3x3dbl_1{nullptr},
      branch3x3dbl_2{nullptr}, branch3x3dbl_3{nullptr}, branch_pool{nullptr};
};
TORCH_MODULE(InceptionA);

// Mixed_6a: grid reduction 35 -> 17.
struct InceptionBImpl : torch::nn::Module {
  explicit InceptionBImpl(int64_t in);
  torch::Tensor forward(const torch::Tensor& x);
  InceptionConv branch3x3{nullptr}, branch3x3dbl_1{nullptr}, branch3x3dbl_2{nullptr}, branch3x3dbl_3{nullptr};
};
TORCH_MODULE(InceptionB);

// Mixed_6b..e: factorised 7x7 branches; avg-pool with padding not counted.
struct InceptionCImpl : torch::nn::Module {
  InceptionCImpl(int64_t in, int64_t channels_7x7);
  torch::Tensor forward(const torch::Tensor& x);
  InceptionConv branch1x1{nullptr}, branch7x7_1{nullptr}, branch7x7_2{nullptr}, branch7x7_3{nullptr},
      branch7x7dbl_1{nullptr}, branch7x7dbl_2{nullptr}, branch7x7dbl_3{nullptr}, branch7x7dbl_4{nullptr},
      branch7x7dbl_5{nullptr}, branch_pool{nullptr};
};
TORCH_MODULE(InceptionC);

// Mixed_7a: grid reduction 17 -> 8.
struct InceptionDImpl : torch::nn::Module {
  explicit InceptionDImpl(int64_t in);
  torch::Tensor forward(const torch::Tensor& x);
  InceptionConv branch3x3_1{nullptr}, branch3x3_2{nullptr}, branch7x7x3_1{nullptr}, branch7x7x3_2{nullptr},
      branch7x7x3_3{nullptr}, branch7x7x3_4{nullptr};
};
TORCH_MODULE(InceptionD);

// Mixed_7b (avg-pool, padding not counted) and Mixed_7c (max-pool: the FID graph's quirk).
struct InceptionEImpl : torch::nn::Module {
  InceptionEImpl(int64_t in, bool max_pool);
  torch::Tensor forward(const torch::Tensor& x);
  bool max_pool;
  InceptionConv branch1x1{nullptr}, branch3x3_1{nullptr}, branch3x3_2a{nullptr}, branch3x3_2b{nullptr},
      branch3x3dbl_1{nullptr}, branch3x3dbl_2{nullptr}, branch3x3dbl_3a{nullptr}, branch3x3dbl_3b{nullptr},
      branch_pool{nullptr};
};
TORCH_MODULE(InceptionE);

struct FidInceptionImpl : torch::nn::Module {
  static constexpr int64_t kFeatures = 2048;
  static constexpr int64_t kInputSize = 299;

  FidInceptionImpl();
  // Images uint8 [N, 3, H, W] (any H, W; any device: moved to the network's) -> pool3 features float32 [N, 2048] on
  // the network's device, the images brought to 299x299 by `resize` (fid_input).
  // Call under torch::NoGradGuard with the module in eval mode.
  torch::Tensor forward(const torch::Tensor& images, FidResize resize = FidResize::pytorch_fid);
  // The same from a float batch already resized and scaled to [-1, 1].
  torch::Tensor features(const torch::Tensor& x);

  InceptionConv Conv2d_1a_3x3{nullptr}, Conv2d_2a_3x3{nullptr}, Conv2d_2b_3x3{nullptr}, Conv2d_3b_1x1{nullptr},
      Conv2d_4a_3x3{nullptr};
  InceptionA Mixed_5b{nullptr}, Mixed_5c{nullptr}, Mixed_5d{nullptr};
  InceptionB Mixed_6a{nullptr};
  InceptionC Mixed_6b{nullptr}, Mixed_6c{nullptr}, Mixed_6d{nullptr}, Mixed_6e{nullptr};
  InceptionD Mixed_7a{nullptr};
  InceptionE Mixed_7b{nullptr}, Mixed_7c{nullptr};
};
TORCH_MODULE(FidInception);

// Builds the network, loads `weights_path` (every parameter and BatchNorm running statistic, by name and shape; a
// file that lacks any, has extras or wrong shapes is rejected with the full list), moves it to `device`, eval mode.
FidInception load_fid_inception(const std::string& weights_path, const torch::Device& device);

}  // namespace fm
