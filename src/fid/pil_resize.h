#pragma once
// PIL's Image.resize(size, Image.BICUBIC) on mode "F" (float32) images, as clean-fid resizes images for FID
// ("clean" mode: every channel of a uint8 image as its own float32 image, resized to 299x299).
//
// PIL resamples separably (ImagingResample in libImaging/Resample.c): a horizontal pass into a float32 image, then a
// vertical pass. Output pixel i of an axis of `in` pixels resized to `out` is centred at c = (i + 0.5) * scale with
// scale = in / out; the filter is stretched by s = max(scale, 1) (widened when shrinking, so it averages), with support
// 2 s around c over the input pixels j = round(c - 2 s) .. round(c + 2 s) (clamped to the image), weight
// w_j = bicubic((j - c + 0.5) / s), bicubic the Keys cubic with a = -0.5, and the weights of each output pixel divided
// by their sum (so the border, where pixels are missing, renormalises). Weights and sums are double; each pass stores
// float32; nothing is clipped.
//
// Here each pass is a matrix product with the [out, in] weight matrix in float64 (pixels outside an output pixel's
// support have weight 0), rounded to float32 after each pass as PIL stores it; the only difference from PIL's loop is
// the order of a few double additions, far below float32's rounding.
#include <torch/torch.h>

namespace fm {

// PIL's bicubic weights for one axis: float64 [out_size, in_size], each row summing to 1.
torch::Tensor pil_bicubic_weights(int64_t in_size, int64_t out_size);

// float32 [..., H, W] (any leading dimensions, any device) -> float32 [..., out_h, out_w], each trailing [H, W] plane
// resized as PIL resizes a mode "F" image to (out_w, out_h). An axis whose size does not change is left as it is
// (PIL skips that pass).
torch::Tensor pil_bicubic_resize(const torch::Tensor& x, int64_t out_h, int64_t out_w);

}  // namespace fm
