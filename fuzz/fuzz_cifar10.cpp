// CIFAR-10 binary batches: record length and labels (the test split, one file).
#include "data/cifar10.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fm::fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fm::fuzz::write_scratch("test_batch.bin", data, size);
  return fm::fuzz::run_reader([&] { fm::read_cifar10(fm::fuzz::scratch_dir(), fm::Split::test); });
}
