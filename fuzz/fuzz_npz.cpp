// .npz archives through libzip: listing the members, then reading and parsing all of them.
#include "fuzz_util.h"
#include "io/npy.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fm::fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fm::fuzz::write_scratch("fuzz.npz", data, size);
  return fm::fuzz::run_reader([&] {
    fm::npz_keys(path);
    fm::read_npz(path);
  });
}
