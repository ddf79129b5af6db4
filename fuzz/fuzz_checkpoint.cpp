// Checkpoints: everything the reader does before weights are loaded into a network (the LibTorch archive, the format
// version, the stored config, step and sample shape). When checkpoints carry a checksum, read_checkpoint below is the
// one place to change: fuzz the payload parser past the checksum (a fuzzer cannot forge it), and the verifier alone.
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
