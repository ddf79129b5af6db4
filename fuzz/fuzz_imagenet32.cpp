// ImageNet-32 batches (.npz with 'data' and 'labels'): the validation split, one file.
#include "data/imagenet32.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fm::fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fm::fuzz::write_scratch("val_data.npz", data, size);
  return fm::fuzz::run_reader([&] { fm::read_imagenet32(fm::fuzz::scratch_dir(), fm::Split::test); });
}
