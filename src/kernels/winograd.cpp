#include "kernels/winograd.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace fm::kernels::winograd {
namespace {

// F(4x4, 3x3) with the interpolation points 0, +-1, +-2 and infinity (Lavin & Gray's choice, and cuDNN's and
// oneDNN's). B^T, A and A^T are applied by InputTransform, OutputGradTransform and OutputTransform below; G takes a
// 3x3 kernel to 6x6 and (transposed) a transformed weight gradient back.
constexpr double kG[kAlpha][3] = {{1.0 / 4, 0, 0},
                                  {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                  {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                  {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                  {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                  {0, 0, 1}};

// The transforms of one block of tiles, both together.
constexpr int64_t kBlockBytes = int64_t{1} << 20;

struct Geometry {
  int64_t n, c, h, w, tiles_h, tiles_w;
  int64_t tiles() const { return n * tiles_h * tiles_w; }
};

Geometry geometry_of(const torch::Tensor& t) {
  TORCH_CHECK(t.dim() == 4, "winograd: expected an [N, C, H, W] tensor, got ", t.sizes());
  return {t.size(0), t.size(1), t.size(2), t.size(3), (t.size(2) + kTile - 1) / kTile,
          (t.size(3) + kTile - 1) / kTile};
}

// The loop that follows writes no element that another of its iterations reads or writes.
#if defined(__clang__)
#define FM_NO_ALIAS _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define FM_NO_ALIAS _Pragma("GCC ivdep")
#else
#define FM_NO_ALIAS
#endif

// The In x In patch of channel vectors whose top-left pixel is (y0, x0), zero outside the image.
template <class T, int In>
void gather(const T* image, const Geometry& g, int64_t y0, int64_t x0, T* patch) {
  const int64_t s0 = std::max<int64_t>(0, -x0), s1 = std::min<int64_t>(In, g.w - x0);
  for (int r = 0; r < In; ++r) {
    T* row = patch + r * In * g.c;
    const int64_t y = y0 + r;
    if (y < 0 || y >= g.h || s0 >= s1) {
      std::fill(row, row + In * g.c, T(0));
      continue;
    }
    std::fill(row, row + s0 * g.c, T(0));
    std::memcpy(row + s0 * g.c, image + (y * g.w + x0 + s0) * g.c, (s1 - s0) * g.c * sizeof(T));
    std::fill(row + s1 * g.c, row + In * g.c, T(0));
  }
}

// The one-dimensional transforms, written out with their common terms so that each input is loaded once; they
// apply to c channels at a time, the inputs `in_stride` apart, the outputs `out_stride` apart. Each is its matrix
// times the input column: tests/test_winograd.cpp compares the first two with B^T and A written out, and the third
// through the forward pass against LibTorch's conv2d. The rows may overlap as far as the compiler knows (they are
// strides of one buffer), and with six inputs and six outputs that is more pairs than GCC checks at run time before
// vectorising: without FM_NO_ALIAS it left the first two loops scalar, and the transforms took as long as the products.
struct InputTransform {  // B^T d
  static constexpr int kIn = kAlpha;
  template <class T>
  static void apply(const T* __restrict d, int64_t in_stride, T* __restrict r, int64_t out_stride, int64_t c) {
    FM_NO_ALIAS
    for (int64_t k = 0; k < c; ++k) {
      const T d0 = d[k], d1 = d[in_stride + k], d2 = d[2 * in_stride + k], d3 = d[3 * in_stride + k],
              d4 = d[4 * in_stride + k], d5 = d[5 * in_stride + k];
      const T s12 = d1 + d2, m12 = d1 - d2, s34 = d3 + d4, m43 = d4 - d3, m42 = d4 - d2, m31 = d3 - d1;
      r[k] = T(4) * d0 - T(5) * d2 + d4;
      r[out_stride + k] = s34 - T(4) * s12;
      r[2 * out_stride + k] = m43 + T(4) * m12;
      r[3 * out_stride + k] = m42 + T(2) * m31;
      r[4 * out_stride + k] = m42 - T(2) * m31;
      r[5 * out_stride + k] = T(4) * d1 - T(5) * d3 + d5;
    }
  }
};

struct OutputGradTransform {  // A dy
  static constexpr int kIn = kTile;
  template <class T>
  static void apply(const T* __restrict d, int64_t in_stride, T* __restrict r, int64_t out_stride, int64_t c) {
    FM_NO_ALIAS
    for (int64_t k = 0; k < c; ++k) {
      const T d0 = d[k], d1 = d[in_stride + k], d2 = d[2 * in_stride + k], d3 = d[3 * in_stride + k];
      const T s02 = d0 + d2, s13 = d1 + d3, q02 = d0 + T(4) * d2, q13 = T(2) * d1 + T(8) * d3;
      r[k] = d0;
      r[out_stride + k] = s02 + s13;
      r[2 * out_stride + k] = s02 - s13;
      r[3 * out_stride + k] = q02 + q13;
      r[4 * out_stride + k] = q02 - q13;
      r[5 * out_stride + k] = d3;
    }
  }
};

struct OutputTransform {  // A^T m: six inputs, four outputs
  template <class T>
  static void apply(const T* __restrict m, int64_t in_stride, T* __restrict r, int64_t out_stride, int64_t c) {
    FM_NO_ALIAS
    for (int64_t k = 0; k < c; ++k) {
      const T m0 = m[k], m1 = m[in_stride + k], m2 = m[2 * in_stride + k], m3 = m[3 * in_stride + k],
              m4 = m[4 * in_stride + k], m5 = m[5 * in_stride + k];
      const T s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
      r[k] = m0 + s12 + s34;
      r[out_stride + k] = d12 + T(2) * d34;
      r[2 * out_stride + k] = s12 + T(4) * s34;
      r[3 * out_stride + k] = d12 + T(8) * d34 + m5;
    }
  }
};

// Transform::apply along both axes of the patches of tiles [t0, t0 + count) (In x In pixels starting `pad` pixels
// before each tile), into out[i * 6 + j][t - t0][c] with planes `plane` elements apart.
template <class Transform, class T>
void transform_range(const T* image, const Geometry& g, int64_t pad, int64_t t0, int64_t count, T* out,
                     int64_t plane) {
  constexpr int In = Transform::kIn;
  const int64_t per_sample = g.tiles_h * g.tiles_w, c = g.c;
  at::parallel_for(t0, t0 + count, 8, [&](int64_t begin, int64_t end) {
    std::vector<T> patch(In * In * c), tmp(kAlpha * In * c);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / per_sample, ty = t % per_sample / g.tiles_w, tx = t % g.tiles_w;
      const int64_t y0 = ty * kTile - pad, x0 = tx * kTile - pad;
      const T* src = image + n * g.h * g.w * c;
      int64_t row = g.w * c;  // the patch is read in place, unless it crosses the edge of the image
      if (y0 >= 0 && x0 >= 0 && y0 + In <= g.h && x0 + In <= g.w) {
        src += (y0 * g.w + x0) * c;
      } else {
        gather<T, In>(src, g, y0, x0, patch.data());
        src = patch.data();
        row = In * c;
      }
      for (int l = 0; l < In; ++l)  // columns: tmp[i][l]
        Transform::apply(src + l * c, row, tmp.data() + l * c, In * c, c);
      for (int i = 0; i < kAlpha; ++i)  // rows: out[i * 6 + j][t - t0]
        Transform::apply(tmp.data() + i * In * c, c, out + i * kAlpha * plane + (t - t0) * c, plane, c);
    }
  });
}

// The inverse direction for the forward pass: A^T m A (+ bias) of tiles [t0, t0 + count) from
// m[i * 6 + j][t - t0][c] (planes `plane` elements apart) into their 4x4 places of the channels-last output.
template <class T>
void untransform_range(const T* m, int64_t plane, const T* bias, const Geometry& g, int64_t t0, int64_t count,
                       T* image) {
  const int64_t per_sample = g.tiles_h * g.tiles_w, c = g.c;
  at::parallel_for(t0, t0 + count, 8, [&](int64_t begin, int64_t end) {
    std::vector<T> tmp(kTile * kAlpha * c), patch(kTile * kTile * c);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t n = t / per_sample, y0 = t % per_sample / g.tiles_w * kTile, x0 = t % g.tiles_w * kTile;
      for (int j = 0; j < kAlpha; ++j)  // columns: tmp[r][j]
        OutputTransform::apply(m + j * plane + (t - t0) * c, kAlpha * plane, tmp.data() + j * c, kAlpha * c, c);
      T* out = image + n * g.h * g.w * c;
      const bool inside = y0 + kTile <= g.h && x0 + kTile <= g.w;
      for (int r = 0; r < kTile; ++r) {  // rows: pixel (y0 + r, x0 + s), written in place unless past the edge
        T* dst = inside ? out + ((y0 + r) * g.w + x0) * c : patch.data() + r * kTile * c;
        OutputTransform::apply(tmp.data() + r * kAlpha * c, c, dst, c, c);
        if (bias)
          for (int s = 0; s < kTile; ++s)
            for (int64_t k = 0; k < c; ++k) dst[s * c + k] += bias[k];
      }
      if (!inside)
        for (int64_t r = 0; r < std::min(kTile, g.h - y0); ++r)
          std::memcpy(out + ((y0 + r) * g.w + x0) * c, patch.data() + r * kTile * c,
                      std::min(kTile, g.w - x0) * c * sizeof(T));
    }
  });
}

// Tiles per block: both transforms of a block (C and C_out channels) within kBlockBytes, and the same number of blocks
// for every thread.
int64_t block_size(int64_t tiles, int64_t c, int64_t co, int64_t element_size) {
  const int64_t fits =
      std::clamp<int64_t>(kBlockBytes / (kAlpha * kAlpha * std::max<int64_t>(1, c + co) * element_size), 8, 1024);
  const int64_t threads = at::get_num_threads(), per_thread = (tiles + threads - 1) / threads;
  const int64_t blocks_per_thread = (per_thread + fits - 1) / fits;
  return std::max<int64_t>(1, (per_thread + blocks_per_thread - 1) / blocks_per_thread);
}

// f(t0, count, v, m, thread) for the blocks of tiles, v and m the block's transforms ([36, count, C] and
// [36, count, C_out], contiguous) in buffers of the thread's own. Blocks keep the transforms in the cache until their
// 36 products have read them: the transforms of a whole batch (2.25x the input and the gradient) would go out to
// memory and back, and cost more than the products. Each thread takes whole blocks, transforms and products alike: one
// parallel region per convolution rather than three per block, and the products (run on one thread inside the region)
// are too small to split well.
template <class F>
void for_each_block(int64_t tiles, int64_t c, int64_t co, const torch::TensorOptions& options, F&& f) {
  const int64_t block = block_size(tiles, c, co, static_cast<int64_t>(options.dtype().itemsize()));
  at::parallel_for(0, (tiles + block - 1) / block, 1, [&](int64_t first, int64_t last) {
    auto vbuf = torch::empty({kAlpha * kAlpha * block * c}, options);
    auto mbuf = torch::empty({kAlpha * kAlpha * block * co}, options);
    for (int64_t b = first; b < last; ++b) {
      const int64_t t0 = b * block, count = std::min(block, tiles - t0);
      f(t0, count, vbuf.narrow(0, 0, kAlpha * kAlpha * count * c).view({kAlpha * kAlpha, count, c}),
        mbuf.narrow(0, 0, kAlpha * kAlpha * count * co).view({kAlpha * kAlpha, count, co}), at::get_thread_num());
    }
  });
}

// G (x) G, [36, 9]: row i * 6 + j, column u * 3 + v holds G[i][u] G[j][v], so that a 3x3 kernel flattened to 9
// numbers goes to G g G^T flattened to 36 by one product, and a transformed gradient comes back by its transpose: one
// matrix product for all channel pairs, where an einsum over the 3x3 taps would cost more than the convolution's own
// products on the 8x8 maps.
torch::Tensor kernel_transform(torch::ScalarType dtype) {
  double k[kAlpha * kAlpha][9];
  for (int i = 0; i < kAlpha; ++i)
    for (int j = 0; j < kAlpha; ++j)
      for (int u = 0; u < 3; ++u)
        for (int v = 0; v < 3; ++v) k[i * kAlpha + j][u * 3 + v] = kG[i][u] * kG[j][v];
  return torch::from_blob(&k[0][0], {kAlpha * kAlpha, 9}, torch::kFloat64).to(dtype, false, /*copy=*/true);
}

void check_cpu_float(const torch::Tensor& t) {
  TORCH_CHECK(t.is_cpu() && (t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kFloat64),
              "winograd: expected a float32 or float64 CPU tensor, got ", t.toString());
}

template <class Transform>
torch::Tensor all_tiles(const torch::Tensor& src, int64_t pad) {
  check_cpu_float(src);
  const auto g = geometry_of(src);
  const auto x = src.contiguous(at::MemoryFormat::ChannelsLast);  // N, H, W, C in memory
  auto out = torch::empty({kAlpha * kAlpha, g.tiles(), g.c}, src.options());
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "winograd_tiles", [&] {
    transform_range<Transform>(x.const_data_ptr<scalar_t>(), g, pad, 0, g.tiles(), out.mutable_data_ptr<scalar_t>(),
                               g.tiles() * g.c);
  });
  return out;
}

}  // namespace

int64_t tile_count(const torch::IntArrayRef& shape) {
  return shape[0] * ((shape[2] + kTile - 1) / kTile) * ((shape[3] + kTile - 1) / kTile);
}

torch::Tensor input_tiles(const torch::Tensor& x) { return all_tiles<InputTransform>(x, 1); }

torch::Tensor output_grad_tiles(const torch::Tensor& dy) { return all_tiles<OutputGradTransform>(dy, 0); }

torch::Tensor conv3x3_weight_grad(const torch::Tensor& x, const torch::Tensor& dy) {
  check_cpu_float(x);
  check_cpu_float(dy);
  TORCH_CHECK(x.dim() == 4 && dy.dim() == 4 && x.size(0) == dy.size(0) && x.size(2) == dy.size(2) &&
                  x.size(3) == dy.size(3),
              "winograd: input ", x.sizes(), " and output gradient ", dy.sizes(),
              " do not belong to a 3x3 convolution with stride 1 and padding 1");
  TORCH_CHECK(x.scalar_type() == dy.scalar_type(), "winograd: input and output gradient differ in dtype");
  const auto gx = geometry_of(x), gy = geometry_of(dy);
  const auto xc = x.contiguous(at::MemoryFormat::ChannelsLast), dc = dy.contiguous(at::MemoryFormat::ChannelsLast);
  const int64_t c = gx.c, co = gy.c, tiles = gx.tiles();
  // Each thread sums its own blocks' products and the threads' sums are added at the end: threads x 36 x C x C_out
  // numbers (oneDNN's per-thread weight-gradient buffers hold threads x 9 x C x C_out).
  auto du = torch::zeros({at::get_num_threads(), kAlpha * kAlpha, c, co}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "winograd_weight_grad", [&] {
    for_each_block(tiles, c, co, x.options(), [&](int64_t t0, int64_t count, torch::Tensor v, torch::Tensor m,
                                                  int thread) {
      transform_range<InputTransform>(xc.const_data_ptr<scalar_t>(), gx, 1, t0, count, v.mutable_data_ptr<scalar_t>(),
                                      count * c);
      transform_range<OutputGradTransform>(dc.const_data_ptr<scalar_t>(), gy, 0, t0, count,
                                           m.mutable_data_ptr<scalar_t>(), count * co);
      du[thread].baddbmm_(v.transpose(1, 2), m);
    });
  });
  // [9, C * C_out] back to [C_out, C, 3, 3].
  return torch::mm(kernel_transform(x.scalar_type()).t(), du.sum(0).view({kAlpha * kAlpha, c * co}))
      .view({3, 3, c, co})
      .permute({3, 2, 0, 1})
      .contiguous();
}

torch::Tensor conv3x3(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  check_cpu_float(x);
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == x.size(1) && weight.size(2) == 3 && weight.size(3) == 3,
              "winograd: weight ", weight.sizes(), " is not a 3x3 convolution of ", x.sizes());
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() && (!bias.defined() || bias.numel() == weight.size(0)),
              "winograd: weight or bias do not match the input");
  const auto gx = geometry_of(x);
  const int64_t c = gx.c, co = weight.size(0), tiles = gx.tiles();
  const Geometry gy{gx.n, co, gx.h, gx.w, gx.tiles_h, gx.tiles_w};
  const auto xc = x.contiguous(at::MemoryFormat::ChannelsLast);
  // G g G^T for every (input, output) channel pair: [36, C_in, C_out]. (The input gradient's weight,
  // w.flip().transpose(0, 1), is contiguous again once transposed back.)
  const auto u = torch::mm(kernel_transform(x.scalar_type()), weight.transpose(0, 1).reshape({c * co, 9}).t())
                     .view({kAlpha * kAlpha, c, co});
  const auto b = bias.defined() ? bias.to(x.scalar_type()).contiguous() : torch::Tensor();
  auto y = torch::empty({gx.n, co, gx.h, gx.w}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "winograd_conv3x3", [&] {
    for_each_block(tiles, c, co, x.options(), [&](int64_t t0, int64_t count, torch::Tensor v, torch::Tensor m, int) {
      transform_range<InputTransform>(xc.const_data_ptr<scalar_t>(), gx, 1, t0, count, v.mutable_data_ptr<scalar_t>(),
                                      count * c);
      at::bmm_out(m, v, u);
      untransform_range<scalar_t>(m.const_data_ptr<scalar_t>(), count * co,
                                  b.defined() ? b.const_data_ptr<scalar_t>() : nullptr, gy, t0, count,
                                  y.mutable_data_ptr<scalar_t>());
    });
  });
  return y;
}

}  // namespace fm::kernels::winograd

#undef FM_NO_ALIAS  // this file is compiled in a batch with others (FM_UNITY_BUILD)
