// Files written by Python's torch.save (fm import --from torchcfm, fm fid --weights pt_inception-*.pth): the format
// sniffing, the pickle machine in both the zip and the legacy layout, and the state_dict view fm takes of the result.
#include "fuzz_util.h"
#include "interop/torch_file.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fm::fuzz::init_torch();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fm::fuzz::write_scratch("fuzz.pt", data, size);
  return fm::fuzz::run_reader([&] {
    if (!fm::looks_like_torch_file(path)) return;
    const fm::PyPtr root = fm::load_torch_file(path);
    // What fm import and the Inception loader do with the result: a bare state_dict, or torchcfm's training
    // checkpoint holding one under net_model.
    const fm::PyValue* net = root->get("net_model");
    fm::tensor_dict(net ? *net : *root, path, "the file");
  });
}
