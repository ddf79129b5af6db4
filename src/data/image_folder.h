#pragma once
// A directory of PNG, JPEG and BMP files, decoded with stb_image. The class of an image is the first-level
// subfolder it lies under (classes sorted by name, as torchvision's ImageFolder does); a folder with no subfolders
// gives unlabelled images.
#include <string>
#include <vector>

#include "data/dataset.h"

namespace fm {

struct ImageFolderOptions {
  int64_t resolution = 0;    // > 0: resize every image to resolution x resolution; 0: all must share one size
  bool center_crop = false;  // crop to the centred square of side min(width, height) (before resizing, if any)
  int64_t limit = 0;         // > 0: decode only `limit` images, evenly spread over the sorted list (evenly_spread)
};

// The image files under `dir` in sorted path order, and for each its class index (-1 when unlabelled) and the class
// names. Throws InputError when there are none, when a class folder is empty, or when images lie both directly in
// `dir` and in class subfolders.
struct ImageFolderListing {
  std::vector<std::string> files;
  std::vector<int64_t> labels;
  std::vector<std::string> classes;
};
ImageFolderListing list_image_folder(const std::string& dir);

// Decodes the listing onto the CPU as uint8 [N, 3, H, W] (grey and RGBA converted to RGB), in parallel over files.
// Throws InputError naming the path of an unreadable image, or naming both sizes and the path of an image whose size
// differs from the first one's when no resolution is given.
Dataset read_image_folder(const std::string& dir, const ImageFolderOptions& opts = {});

}  // namespace fm
