// fm reflow's pairs (pairs:DIR, data/pairs.h): DIR/pairs.npz with float x0 and x1 of one shape and optional labels.
#include "data/pairs.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fm::fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fm::fuzz::write_scratch("pairs.npz", data, size);
  return fm::fuzz::run_reader([&] { fm::read_pairs(fm::fuzz::scratch_dir()); });
}
