// Checkpoints: everything the reader does before weights are loaded into a network. The XXH3 trailer is verified
// first (checkpoint/seal), so mutated bytes exercise the verifier; the payload parser behind it (LibTorch's archive,
// the format version, the stored config) is reached only by bytes whose checksum matches.
#include "checkpoint/checkpoint.h"
#include "fuzz_util.h"

namespace {
void read_checkpoint(const std::string& path) {
  fm::CheckpointReader reader(path, torch::kCPU);
  fm::to_json(reader.config());
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fm::fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fm::fuzz::write_scratch("ckpt.pt", data, size);
  return fm::fuzz::run_reader([&] { read_checkpoint(path); });
}
