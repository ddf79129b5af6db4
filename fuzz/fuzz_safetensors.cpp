// .safetensors files (fm import, fm export's round trip): the 8-byte header length, the JSON header, and every
// tensor's dtype, shape and offsets checked against the file before its bytes are copied.
#include "fuzz_util.h"
#include "interop/safetensors.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fm::fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fm::fuzz::write_scratch("fuzz.safetensors", data, size);
  return fm::fuzz::run_reader([&] { fm::read_safetensors(path); });
}
