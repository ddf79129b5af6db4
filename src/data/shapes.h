#pragma once
// A procedural image set for tests and quick experiments: RGB images of one sharp-edged, single-coloured object (a
// filled circle, square or triangle; the kind is the class label) on a plain or linear-gradient background.
// Deterministic for a seed: everything is drawn from a dedicated CPU generator.
//
// Guarantees: the object's side (the circle's diameter, the square's side, the triangle's base and height) is 40-70%
// of the image side and it lies wholly inside the image; every channel of the object colour differs by at least 56
// from that channel of every background pixel, so a plain-background image holds exactly two colours; labels are
// balanced (the counts differ by at most one).
#include <array>
#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "data/dataset.h"

namespace fm {

enum ShapeKind : int64_t { kShapeCircle = 0, kShapeSquare = 1, kShapeTriangle = 2 };
constexpr int64_t kShapeClasses = 3;
constexpr int64_t kShapeMinColourGap = 56;  // per channel, object versus any background pixel

struct ShapesSet {
  torch::Tensor images;      // uint8 [N, 3, R, R]
  torch::Tensor labels;      // int64 [N], a ShapeKind
  torch::Tensor masks;       // bool [N, R, R]: the object's pixels
  torch::Tensor background;  // uint8 [N, 3]: the plain background's colour (gradient: the colour it starts from)
  torch::Tensor object;      // uint8 [N, 3]: the object's colour
  torch::Tensor gradient;    // bool [N]: the background is a linear gradient rather than plain
};

// n images of side `res` (>= 8) on the CPU; a fraction `gradient_fraction` of them (drawn at random) on gradients.
ShapesSet make_shapes(int64_t n, int64_t res, uint64_t seed, double gradient_fraction = 0.5);

// The set as a Dataset on the CPU (images, labels, 3 classes).
Dataset shapes_dataset(const ShapesSet& s);

// The distinct colours of one uint8 [3, H, W] image with their pixel counts, most frequent first (ties: by colour).
struct ColourCount {
  std::array<uint8_t, 3> rgb;
  int64_t pixels;
};
std::vector<ColourCount> colour_counts(const torch::Tensor& chw);

// How much an image looks like a shapes image without a trained classifier: per image of uint8 [N, 3, H, W], the
// fraction of pixels within `tolerance` (in every channel) of the nearer of its two dominant colours, found by
// 2-means. Shapes data scores about 1 (gradient ends can sit just outside); noise and colour blobs score far lower.
torch::Tensor two_colour_fraction(const torch::Tensor& images, int64_t tolerance = 24);

}  // namespace fm
