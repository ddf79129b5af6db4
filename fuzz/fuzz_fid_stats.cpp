// FID statistics (.npz with mu, sigma and optionally n), with their shape, dtype and symmetry checks.
#include "fid/fid_stats.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fm::fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fm::fuzz::write_scratch("stats.npz", data, size);
  return fm::fuzz::run_reader([&] { fm::read_fid_stats(path); });
}
