// Post-hoc EMA snapshots: what `fm ema` reads of each before it loads profiles into a network (the step and the
// lengths). As for checkpoints, the XXH3 trailer is verified first, so mutated bytes exercise the verifier and only
// bytes whose checksum matches reach LibTorch's archive parser and the snapshot's fields.
#include "checkpoint/phema_snapshot.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fm::fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fm::fuzz::write_scratch("phema_000000001.pt", data, size);
  return fm::fuzz::run_reader([&] { fm::PhemaSnapshotReader reader(path); });
}
