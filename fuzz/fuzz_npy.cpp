// .npy parsing from memory (header grammar, dtype, shape and byte count), as used for every .npz member.
#include "fuzz_util.h"
#include "io/npy.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fm::fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return fm::fuzz::run_reader([&] { fm::parse_npy(data, size, "fuzz.npy"); });
}
