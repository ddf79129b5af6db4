#pragma once
// Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016)
// for a 3x3 convolution with stride 1 and padding 1 on the CPU: its forward pass, input gradient and weight gradient.
//
// Why: the convolutions are three quarters of a CPU training step, and oneDNN's weight-gradient kernels reach only
// about 60% of a core's FMA peak on the U-Net's shapes (its forward and input-gradient kernels about 90%). With the
// output cut into 4x4 tiles, the convolution of one tile is Y = A^T [(G g G^T) * (B^T d B)] A for its 6x6 input
// patch d, and the adjoint of that gives
//     dL/dg = G^T [ sum over tiles of (B^T d B) * (A dY A^T) ] G.
// Either way the work is 36 matrix products over channels (one per position of the 6x6 transformed tile), 4x fewer
// multiply-adds than the direct sum over 9 taps, plus transforms that only add and scale. They run in the tensor's
// own precision: float32 results differ from oneDNN's by a few 1e-6 of the largest entry, float64 agrees to rounding.
#include <torch/torch.h>

namespace fm::kernels::winograd {

constexpr int64_t kTile = 4;    // outputs per tile side (m)
constexpr int64_t kAlpha = 6;   // transformed tile side (m + r - 1)

// Tiles of an [N, C, H, W] tensor: N * ceil(H / 4) * ceil(W / 4), in (sample, tile row, tile column) order.
int64_t tile_count(const torch::IntArrayRef& shape);

// B^T d B for the 6x6 input patch of every output tile (zero outside the image): [36, tiles, C].
torch::Tensor input_tiles(const torch::Tensor& x);

// A dY A^T for every 4x4 tile of the output gradient (zero past the edge): [36, tiles, C].
torch::Tensor output_grad_tiles(const torch::Tensor& dy);

// dL/dW of conv2d(x, W, stride 1, padding 1) given dL/dY = dy; [C_out, C_in, 3, 3]. x and dy are float32 or float64
// on the CPU, in any memory layout.
torch::Tensor conv3x3_weight_grad(const torch::Tensor& x, const torch::Tensor& dy);

// conv2d(x, weight, bias, stride 1, padding 1) through the same tiles: Y = A^T [(G g G^T) * (B^T d B)] A per tile;
// channels-last output. The input gradient is this with weight.flip({2, 3}).transpose(0, 1).
torch::Tensor conv3x3(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

}  // namespace fm::kernels::winograd
