#include "data/image_folder.h"

#include <algorithm>
#include <filesystem>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>

#include <ATen/Parallel.h>
#include <stb_image.h>
#include <stb_image_resize.h>

#include "util/error.h"

namespace fm {
namespace {

namespace fs = std::filesystem;

bool is_image_name(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp";
}

bool is_hidden(const fs::path& p) {
  auto n = p.filename().string();
  return !n.empty() && n[0] == '.';
}

std::string size_str(int64_t w, int64_t h) { return std::to_string(w) + "x" + std::to_string(h); }

constexpr int64_t kMaxImageSide = 16384;
constexpr int64_t kMaxImagePixels = int64_t(1) << 26;  // 8192 x 8192

// One decoded image as RGB HWC bytes, or the reason it could not be decoded.
struct Decoded {
  std::vector<uint8_t> rgb;
  int w = 0, h = 0;
  std::string error;
};

Decoded decode(const std::string& path) {
  Decoded d;
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) {
    d.error = "cannot open";
    return d;
  }
  const std::streamoff size = f.tellg();
  if (size <= 0 || size > std::numeric_limits<int>::max()) {
    d.error = size == 0 ? "empty file" : size < 0 ? "cannot read" : "file too large";
    return d;
  }
  std::string bytes(static_cast<size_t>(size), '\0');
  f.seekg(0);
  if (!f.read(bytes.data(), size)) {
    d.error = "read error";
    return d;
  }
  int c = 0;
  // The header alone can claim 2^24 pixels a side, and a few hundred bytes of BMP decode to that much; refuse what no
  // training image needs before stb allocates and fills it.
  // A header stb cannot read for its size is refused too: stb's decoders accept some (a BMP of 9 x 16.7 M rows,
  // found by fuzz_image) that its size probe does not.
  if (!stbi_info_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()), static_cast<int>(bytes.size()), &d.w,
                             &d.h, &c)) {
    const char* why = stbi_failure_reason();
    d.error = std::string("cannot decode image (") + (why ? why : "unknown reason") + ")";
    return d;
  }
  // stb's BMP probe reports a top-down image's height as negative, as the header stores it.
  const int64_t w = std::abs(static_cast<int64_t>(d.w)), h = std::abs(static_cast<int64_t>(d.h));
  if (w > kMaxImageSide || h > kMaxImageSide || w * h > kMaxImagePixels) {
    d.error = "image is " + size_str(w, h) + ", larger than fm reads (" + std::to_string(kMaxImageSide) +
              " a side, " + std::to_string(kMaxImagePixels) + " pixels)";
    return d;
  }
  // Forcing 3 components makes stb_image replicate grey and drop alpha.
  uint8_t* px = stbi_load_from_memory(reinterpret_cast<const stbi_uc*>(bytes.data()), static_cast<int>(bytes.size()),
                                      &d.w, &d.h, &c, 3);
  if (!px) {
    const char* why = stbi_failure_reason();
    d.error = std::string("cannot decode image (") + (why ? why : "unknown reason") + ")";
    return d;
  }
  d.rgb.assign(px, px + static_cast<size_t>(d.w) * d.h * 3);
  stbi_image_free(px);
  // stb decodes a BMP header's zero height as an image without pixels, which the resizer then asserts on.
  if (d.w <= 0 || d.h <= 0) d.error = "image is " + size_str(d.w, d.h) + ": no pixels";
  return d;
}

// Crops (optionally) and resizes to `res` x `res` into `out` (HWC); returns an error message or "".
std::string fit(const Decoded& d, int64_t res, bool center_crop, uint8_t* out) {
  int x0 = 0, y0 = 0, w = d.w, h = d.h;
  if (center_crop) {
    int s = std::min(w, h);
    x0 = (w - s) / 2, y0 = (h - s) / 2, w = h = s;
  }
  const uint8_t* src = d.rgb.data() + (static_cast<size_t>(y0) * d.w + x0) * 3;
  const int stride = d.w * 3;
  if (w == res && h == res) {
    for (int y = 0; y < h; ++y) std::memcpy(out + static_cast<size_t>(y) * res * 3, src + static_cast<size_t>(y) * stride, res * 3);
    return "";
  }
  if (!stbir_resize_uint8(src, w, h, stride, out, static_cast<int>(res), static_cast<int>(res), 0, 3))
    return "resizing from " + size_str(w, h) + " to " + size_str(res, res) + " failed";
  return "";
}

}  // namespace

ImageFolderListing list_image_folder(const std::string& dir) {
  const fs::path root(dir);
  if (!fs::is_directory(root)) throw InputError("folder: '" + dir + "' is not a directory");
  ImageFolderListing out;
  std::vector<std::string> top_level;  // images directly in root
  std::vector<std::pair<std::string, std::string>> in_class;  // (class, path)
  std::set<std::string> class_dirs;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec))
    if (!is_hidden(e.path()) && e.is_directory()) class_dirs.insert(e.path().filename().string());
  if (ec) throw InputError("folder: " + dir + ": cannot list (" + ec.message() + ")");
  auto it = fs::recursive_directory_iterator(root, fs::directory_options::follow_directory_symlink, ec);
  if (ec) throw InputError("folder: " + dir + ": cannot list (" + ec.message() + ")");
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) throw InputError("folder: " + dir + ": cannot list (" + ec.message() + ")");
    const auto& p = it->path();
    if (is_hidden(p)) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file() || !is_image_name(p)) continue;
    auto rel = p.lexically_relative(root);
    if (std::distance(rel.begin(), rel.end()) == 1)
      top_level.push_back(p.string());
    else
      in_class.emplace_back(rel.begin()->string(), p.string());
  }
  if (ec) throw InputError("folder: " + dir + ": cannot list (" + ec.message() + ")");
  if (top_level.empty() && in_class.empty())
    throw InputError("folder: " + dir + ": no PNG, JPEG or BMP images found");
  if (!top_level.empty() && !in_class.empty())
    throw InputError("folder: " + dir + ": images lie both directly in it (" + top_level.front() +
                     ") and in class subfolders (" + in_class.front().second +
                     "); put all of them in class subfolders, or none");
  if (!top_level.empty()) {
    std::sort(top_level.begin(), top_level.end());
    out.files = std::move(top_level);
    out.labels.assign(out.files.size(), -1);
    return out;
  }
  out.classes.assign(class_dirs.begin(), class_dirs.end());  // std::set: sorted by name
  std::set<std::string> used;
  for (const auto& [c, p] : in_class) used.insert(c);
  for (const auto& c : out.classes)
    if (!used.count(c))
      throw InputError("folder: " + (root / c).string() + ": class folder holds no PNG, JPEG or BMP images");
  // Grouped by class in class order, then by path, as torchvision's ImageFolder orders them.
  std::vector<std::pair<int64_t, std::string>> labelled;
  for (const auto& [c, p] : in_class)
    labelled.emplace_back(std::lower_bound(out.classes.begin(), out.classes.end(), c) - out.classes.begin(), p);
  std::sort(labelled.begin(), labelled.end());
  for (auto& [label, p] : labelled) {
    out.labels.push_back(label);
    out.files.push_back(std::move(p));
  }
  return out;
}

Dataset read_image_folder(const std::string& dir, const ImageFolderOptions& opts) {
  auto listing = list_image_folder(dir);
  const int64_t listed = static_cast<int64_t>(listing.files.size());
  if (opts.limit > 0 && opts.limit < listed) {
    // Files are listed class by class; a stride over the list keeps every class's share.
    ImageFolderListing kept;
    kept.classes = listing.classes;
    for (int64_t i : evenly_spread(listed, opts.limit)) {
      kept.files.push_back(listing.files[i]);
      kept.labels.push_back(listing.labels[i]);
    }
    listing = std::move(kept);
  }
  const int64_t n = static_cast<int64_t>(listing.files.size());

  // The first image fixes the size when no resolution is given.
  const Decoded first = decode(listing.files[0]);
  if (!first.error.empty()) throw file_error(listing.files[0], first.error);
  // Without a resolution every image keeps the first one's size (its centred square with center_crop).
  const int64_t side = opts.resolution > 0 ? opts.resolution : opts.center_crop ? std::min(first.w, first.h) : 0;
  const int64_t out_h = side > 0 ? side : first.h;
  const int64_t out_w = side > 0 ? side : first.w;
  auto hwc = torch::empty({n, out_h, out_w, 3}, torch::kUInt8);
  const size_t image_bytes = static_cast<size_t>(out_h * out_w * 3);
  uint8_t* base = hwc.data_ptr<uint8_t>();

  // Errors are collected per file and the first in path order reported, so the message does not depend on threads.
  std::vector<std::string> errors(n);
  auto place = [&](int64_t i, const Decoded& d) {
    if (!d.error.empty()) {
      errors[i] = d.error;
    } else if (opts.resolution > 0) {
      errors[i] = fit(d, opts.resolution, opts.center_crop, base + i * image_bytes);
    } else if (d.w != first.w || d.h != first.h) {
      errors[i] = "image is " + size_str(d.w, d.h) + " but " + listing.files[0] + " is " + size_str(first.w, first.h) +
                  " (all images must share one size; set data.resolution to resize them)";
    } else if (opts.center_crop) {
      errors[i] = fit(d, side, true, base + i * image_bytes);
    } else {
      std::memcpy(base + i * image_bytes, d.rgb.data(), image_bytes);
    }
  };
  place(0, first);
  at::parallel_for(1, n, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) place(i, decode(listing.files[i]));
  });
  for (int64_t i = 0; i < n; ++i)
    if (!errors[i].empty()) throw file_error(listing.files[i], errors[i]);

  Dataset ds;
  ds.images = hwc.permute({0, 3, 1, 2}).contiguous();
  if (!listing.classes.empty()) {
    ds.labels = torch::tensor(std::vector<int64_t>(listing.labels.begin(), listing.labels.begin() + n), torch::kLong);
    ds.num_classes = static_cast<int64_t>(listing.classes.size());
    ds.class_names = listing.classes;
  }
  ds.subset = describe_subset(listed, opts.limit);
  return ds;
}

}  // namespace fm
