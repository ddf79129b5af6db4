#include "fid/inception.h"

#include <map>
#include <set>

#include "fid/pil_resize.h"
#include "interop/torch_file.h"
#include "io/npy.h"
#include "util/error.h"

namespace fm {
namespace F = torch::nn::functional;

namespace {

// The pools the FID graph differs in: TensorFlow's average pool divides by the number of real (unpadded) inputs.
torch::Tensor avg_pool_3x3_same(const torch::Tensor& x) {
  return F::avg_pool2d(x, F::AvgPool2dFuncOptions(3).stride(1).padding(1).count_include_pad(false));
}
torch::Tensor max_pool_3x3_s2(const torch::Tensor& x) { return F::max_pool2d(x, F::MaxPool2dFuncOptions(3).stride(2)); }

}  // namespace

InceptionConvImpl::InceptionConvImpl(int64_t in, int64_t out, std::vector<int64_t> kernel, std::vector<int64_t> stride,
                                     std::vector<int64_t> padding) {
  conv = register_module(
      "conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(padding).bias(false)));
  bn = register_module("bn", torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(out).eps(0.001)));
}

// In place on the fresh BatchNorm output, as torchvision does: at 299x299 a second activation-sized buffer per layer
// costs ~30% of CPU time in allocation and page faults.
torch::Tensor InceptionConvImpl::forward(const torch::Tensor& x) { return bn(conv(x)).relu_(); }

InceptionAImpl::InceptionAImpl(int64_t in, int64_t pool_features) {
  branch1x1 = register_module("branch1x1", InceptionConv(in, 64, std::vector<int64_t>{1, 1}));
  branch5x5_1 = register_module("branch5x5_1", InceptionConv(in, 48, std::vector<int64_t>{1, 1}));
  branch5x5_2 = register_module("branch5x5_2", InceptionConv(48, 64, std::vector<int64_t>{5, 5},
                                                             std::vector<int64_t>{1, 1}, std::vector<int64_t>{2, 2}));
  branch3x3dbl_1 = register_module("branch3x3dbl_1", InceptionConv(in, 64, std::vector<int64_t>{1, 1}));
  branch3x3dbl_2 = register_module("branch3x3dbl_2", InceptionConv(64, 96, std::vector<int64_t>{3, 3},
                                                                   std::vector<int64_t>{1, 1}, std::vector<int64_t>{1, 1}));
  branch3x3dbl_3 = register_module("branch3x3dbl_3", InceptionConv(96, 96, std::vector<int64_t>{3, 3},
                                                                   std::vector<int64_t>{1, 1}, std::vector<int64_t>{1, 1}));
  branch_pool = register_module("branch_pool", InceptionConv(in, pool_features, std::vector<int64_t>{1, 1}));
}

torch::Tensor InceptionAImpl::forward(const torch::Tensor& x) {
  return torch::cat({branch1x1(x), branch5x5_2(branch5x5_1(x)), branch3x3dbl_3(branch3x3dbl_2(branch3x3dbl_1(x))),
                     branch_pool(avg_pool_3x3_same(x))},
                    1);
}

InceptionBImpl::InceptionBImpl(int64_t in) {
  branch3x3 = register_module("branch3x3", InceptionConv(in, 384, std::vector<int64_t>{3, 3}, std::vector<int64_t>{2, 2}));
  branch3x3dbl_1 = register_module("branch3x3dbl_1", InceptionConv(in, 64, std::vector<int64_t>{1, 1}));
  branch3x3dbl_2 = register_module("branch3x3dbl_2", InceptionConv(64, 96, std::vector<int64_t>{3, 3},
                                                                   std::vector<int64_t>{1, 1}, std::vector<int64_t>{1, 1}));
  branch3x3dbl_3 = register_module("branch3x3dbl_3",
                                   InceptionConv(96, 96, std::vector<int64_t>{3, 3}, std::vector<int64_t>{2, 2}));
}

torch::Tensor InceptionBImpl::forward(const torch::Tensor& x) {
  return torch::cat({branch3x3(x), branch3x3dbl_3(branch3x3dbl_2(branch3x3dbl_1(x))), max_pool_3x3_s2(x)}, 1);
}

InceptionCImpl::InceptionCImpl(int64_t in, int64_t c7) {
  const std::vector<int64_t> k1{1, 1}, k17{1, 7}, k71{7, 1}, s1{1, 1}, p17{0, 3}, p71{3, 0};
  branch1x1 = register_module("branch1x1", InceptionConv(in, 192, k1));
  branch7x7_1 = register_module("branch7x7_1", InceptionConv(in, c7, k1));
  branch7x7_2 = register_module("branch7x7_2", InceptionConv(c7, c7, k17, s1, p17));
  branch7x7_3 = register_module("branch7x7_3", InceptionConv(c7, 192, k71, s1, p71));
  branch7x7dbl_1 = register_module("branch7x7dbl_1", InceptionConv(in, c7, k1));
  branch7x7dbl_2 = register_module("branch7x7dbl_2", InceptionConv(c7, c7, k71, s1, p71));
  branch7x7dbl_3 = register_module("branch7x7dbl_3", InceptionConv(c7, c7, k17, s1, p17));
  branch7x7dbl_4 = register_module("branch7x7dbl_4", InceptionConv(c7, c7, k71, s1, p71));
  branch7x7dbl_5 = register_module("branch7x7dbl_5", InceptionConv(c7, 192, k17, s1, p17));
  branch_pool = register_module("branch_pool", InceptionConv(in, 192, k1));
}

torch::Tensor InceptionCImpl::forward(const torch::Tensor& x) {
  auto b7 = branch7x7_3(branch7x7_2(branch7x7_1(x)));
  auto b7dbl = branch7x7dbl_5(branch7x7dbl_4(branch7x7dbl_3(branch7x7dbl_2(branch7x7dbl_1(x)))));
  return torch::cat({branch1x1(x), b7, b7dbl, branch_pool(avg_pool_3x3_same(x))}, 1);
}

InceptionDImpl::InceptionDImpl(int64_t in) {
  const std::vector<int64_t> k1{1, 1}, k3{3, 3}, k17{1, 7}, k71{7, 1}, s1{1, 1}, s2{2, 2}, p17{0, 3}, p71{3, 0};
  branch3x3_1 = register_module("branch3x3_1", InceptionConv(in, 192, k1));
  branch3x3_2 = register_module("branch3x3_2", InceptionConv(192, 320, k3, s2));
  branch7x7x3_1 = register_module("branch7x7x3_1", InceptionConv(in, 192, k1));
  branch7x7x3_2 = register_module("branch7x7x3_2", InceptionConv(192, 192, k17, s1, p17));
  branch7x7x3_3 = register_module("branch7x7x3_3", InceptionConv(192, 192, k71, s1, p71));
  branch7x7x3_4 = register_module("branch7x7x3_4", InceptionConv(192, 192, k3, s2));
}

torch::Tensor InceptionDImpl::forward(const torch::Tensor& x) {
  auto b7 = branch7x7x3_4(branch7x7x3_3(branch7x7x3_2(branch7x7x3_1(x))));
  return torch::cat({branch3x3_2(branch3x3_1(x)), b7, max_pool_3x3_s2(x)}, 1);
}

InceptionEImpl::InceptionEImpl(int64_t in, bool max_pool_) : max_pool(max_pool_) {
  const std::vector<int64_t> k1{1, 1}, k3{3, 3}, k13{1, 3}, k31{3, 1}, s1{1, 1}, p1{1, 1}, p13{0, 1}, p31{1, 0};
  branch1x1 = register_module("branch1x1", InceptionConv(in, 320, k1));
  branch3x3_1 = register_module("branch3x3_1", InceptionConv(in, 384, k1));
  branch3x3_2a = register_module("branch3x3_2a", InceptionConv(384, 384, k13, s1, p13));
  branch3x3_2b = register_module("branch3x3_2b", InceptionConv(384, 384, k31, s1, p31));
  branch3x3dbl_1 = register_module("branch3x3dbl_1", InceptionConv(in, 448, k1));
  branch3x3dbl_2 = register_module("branch3x3dbl_2", InceptionConv(448, 384, k3, s1, p1));
  branch3x3dbl_3a = register_module("branch3x3dbl_3a", InceptionConv(384, 384, k13, s1, p13));
  branch3x3dbl_3b = register_module("branch3x3dbl_3b", InceptionConv(384, 384, k31, s1, p31));
  branch_pool = register_module("branch_pool", InceptionConv(in, 192, k1));
}

torch::Tensor InceptionEImpl::forward(const torch::Tensor& x) {
  auto b3 = branch3x3_1(x);
  auto bd = branch3x3dbl_2(branch3x3dbl_1(x));
  auto pooled = max_pool ? F::max_pool2d(x, F::MaxPool2dFuncOptions(3).stride(1).padding(1)) : avg_pool_3x3_same(x);
  return torch::cat({branch1x1(x), branch3x3_2a(b3), branch3x3_2b(b3), branch3x3dbl_3a(bd), branch3x3dbl_3b(bd),
                     branch_pool(pooled)},
                    1);
}

FidInceptionImpl::FidInceptionImpl() {
  const std::vector<int64_t> k1{1, 1}, k3{3, 3}, s1{1, 1}, s2{2, 2}, p1{1, 1};
  Conv2d_1a_3x3 = register_module("Conv2d_1a_3x3", InceptionConv(3, 32, k3, s2));
  Conv2d_2a_3x3 = register_module("Conv2d_2a_3x3", InceptionConv(32, 32, k3));
  Conv2d_2b_3x3 = register_module("Conv2d_2b_3x3", InceptionConv(32, 64, k3, s1, p1));
  Conv2d_3b_1x1 = register_module("Conv2d_3b_1x1", InceptionConv(64, 80, k1));
  Conv2d_4a_3x3 = register_module("Conv2d_4a_3x3", InceptionConv(80, 192, k3));
  Mixed_5b = register_module("Mixed_5b", InceptionA(192, 32));
  Mixed_5c = register_module("Mixed_5c", InceptionA(256, 64));
  Mixed_5d = register_module("Mixed_5d", InceptionA(288, 64));
  Mixed_6a = register_module("Mixed_6a", InceptionB(288));
  Mixed_6b = register_module("Mixed_6b", InceptionC(768, 128));
  Mixed_6c = register_module("Mixed_6c", InceptionC(768, 160));
  Mixed_6d = register_module("Mixed_6d", InceptionC(768, 160));
  Mixed_6e = register_module("Mixed_6e", InceptionC(768, 192));
  Mixed_7a = register_module("Mixed_7a", InceptionD(768));
  Mixed_7b = register_module("Mixed_7b", InceptionE(1280, false));
  Mixed_7c = register_module("Mixed_7c", InceptionE(2048, true));
}

torch::Tensor FidInceptionImpl::features(const torch::Tensor& x) {
  auto h = Conv2d_2b_3x3(Conv2d_2a_3x3(Conv2d_1a_3x3(x)));
  h = max_pool_3x3_s2(h);
  h = Conv2d_4a_3x3(Conv2d_3b_1x1(h));
  h = max_pool_3x3_s2(h);
  h = Mixed_5d(Mixed_5c(Mixed_5b(h)));
  h = Mixed_6a(h);
  h = Mixed_6e(Mixed_6d(Mixed_6c(Mixed_6b(h))));
  h = Mixed_7c(Mixed_7b(Mixed_7a(h)));
  return h.mean({2, 3});  // adaptive average pool to 1x1
}

torch::Tensor fid_input(const torch::Tensor& images, FidResize resize, const torch::Device& device) {
  TORCH_CHECK(images.dim() == 4 && images.size(1) == 3 && images.scalar_type() == torch::kUInt8,
              "FID Inception: expected uint8 images [N, 3, H, W], got ", images.scalar_type(), " ", images.sizes());
  const int64_t size = FidInceptionImpl::kInputSize;
  auto x = images.to(device).to(torch::kFloat32);
  switch (resize) {
    case FidResize::pytorch_fid:
      x = F::interpolate(x / 255.0, F::InterpolateFuncOptions()
                                        .size(std::vector<int64_t>{size, size})
                                        .mode(torch::kBilinear)
                                        .align_corners(false));
      return 2.0 * x - 1.0;
    case FidResize::clean:
      return (pil_bicubic_resize(x, size, size).clamp_(0.0, 255.0) - 128.0) / 128.0;
  }
  TORCH_CHECK(false, "fid_input: unknown resize");
  return x;
}

torch::Tensor FidInceptionImpl::forward(const torch::Tensor& images, FidResize resize) {
  auto x = fid_input(images, resize, Conv2d_1a_3x3->conv->weight.device());
  // oneDNN runs channels-last convolutions without reordering every activation to its blocked layout and back:
  // 1.6x faster on CPU (pytorch-fid gets this by accident when its input tensor is channels-last). cuDNN in strict
  // float32 gains nothing from it, so CUDA keeps NCHW.
  if (x.is_cpu()) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  return features(x);
}

FidInception load_fid_inception(const std::string& weights_path, const torch::Device& device) {
  FidInception net;
  std::map<std::string, torch::Tensor> expected;
  for (auto& p : net->named_parameters()) expected[p.key()] = p.value();
  for (auto& b : net->named_buffers())
    if (b.key().find("num_batches_tracked") == std::string::npos) expected[b.key()] = b.value();

  // pytorch-fid's own pt_inception-2015-12-05-6726825d.pth (a torch.save'd state_dict) or the .npz of
  // scripts/export_fid_inception.py. The .pth also holds the 1008-class classifier and, from newer torch versions,
  // BatchNorm step counters: FID uses neither.
  std::map<std::string, torch::Tensor> arrays;
  if (looks_like_torch_file(weights_path)) {
    for (auto& [k, v] : tensor_dict(*load_torch_file(weights_path), weights_path, "the file"))
      if (k.rfind("fc.", 0) != 0 && k.find("num_batches_tracked") == std::string::npos) arrays[k] = v;
  } else {
    arrays = read_npz(weights_path);
  }
  std::vector<std::string> missing, mismatched, unexpected;
  for (const auto& [name, target] : expected) {
    auto it = arrays.find(name);
    if (it == arrays.end()) {
      missing.push_back(name);
    } else if (it->second.sizes() != target.sizes() || !torch::isFloatingType(it->second.scalar_type())) {
      mismatched.push_back(name + " (" + c10::toString(it->second.scalar_type()) + " " +
                           c10::str(it->second.sizes()) + ", expected float " + c10::str(target.sizes()) + ")");
    }
  }
  for (const auto& kv : arrays)
    if (!expected.count(kv.first)) unexpected.push_back(kv.first);

  if (!missing.empty() || !mismatched.empty() || !unexpected.empty()) {
    // One line that names the file, then the lists (capped: a wrong file would list hundreds of names).
    auto list = [](const char* what, const std::vector<std::string>& names) {
      if (names.empty()) return std::string();
      std::string s = std::string("\n  ") + what + " (" + std::to_string(names.size()) + "):";
      const size_t shown = std::min<size_t>(names.size(), 12);
      for (size_t i = 0; i < shown; ++i) s += " " + names[i] + (i + 1 < shown ? "," : "");
      if (names.size() > shown) s += ", ... " + std::to_string(names.size() - shown) + " more";
      return s;
    };
    throw file_error(weights_path, "not FID Inception weights (pytorch-fid's .pth or the .npz of scripts/export_fid_inception.py) (" +
                                       std::to_string(missing.size()) + " missing, " +
                                       std::to_string(mismatched.size()) + " wrong shape or dtype, " +
                                       std::to_string(unexpected.size()) + " unexpected)" + list("missing", missing) +
                                       list("wrong shape or dtype", mismatched) + list("unexpected", unexpected));
  }

  {
    torch::NoGradGuard no_grad;
    for (auto& [name, target] : expected) target.copy_(arrays.at(name).to(torch::kFloat32));
  }
  for (auto& p : net->parameters()) p.set_requires_grad(false);  // a fixed feature extractor
  net->to(device);
  net->eval();
  return net;
}

}  // namespace fm
