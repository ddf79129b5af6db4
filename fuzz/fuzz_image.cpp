// Image decoding as an image folder reads it (stb_image: PNG, JPEG, BMP and whatever else it sniffs), then the crop and
// resize. The first byte picks the options; the rest is the file.
#include "data/image_folder.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fm::fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  fm::ImageFolderOptions opts;
  const int64_t sides[] = {0, 0, 8, 13};
  opts.resolution = sides[data[0] & 3];
  opts.center_crop = data[0] & 4;
  fm::fuzz::write_scratch("image.png", data + 1, size - 1);
  return fm::fuzz::run_reader([&] { fm::read_image_folder(fm::fuzz::scratch_dir(), opts); });
}
