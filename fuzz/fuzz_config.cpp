// The JSON config: parsing, keys, types and ranges, and --set overrides. The input is the file's text, optionally
// followed by a NUL byte and one KEY=VALUE override per line.
#include <vector>

#include "config/config.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fm::fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string json = input.substr(0, nul);
  std::vector<std::string> overrides;
  if (nul != std::string::npos) {
    size_t start = nul + 1;
    while (start <= input.size()) {
      size_t end = input.find('\n', start);
      if (end == std::string::npos) end = input.size();
      overrides.push_back(input.substr(start, end - start));
      start = end + 1;
    }
  }
  const std::string path =
      fm::fuzz::write_scratch("fuzz.json", reinterpret_cast<const uint8_t*>(json.data()), json.size());
  return fm::fuzz::run_reader([&] {
    auto cfg = fm::load_config(path, overrides);
    // What is read must write back and read again as the same config.
    auto again = fm::config_from_json(fm::to_json(cfg), "round trip");
    if (fm::to_json(again) != fm::to_json(cfg)) {
      std::fprintf(stderr, "fm fuzz: config does not round-trip through JSON\n");
      std::abort();
    }
  });
}
