#include "data/cifar10.h"

#include <filesystem>
#include <fstream>

#include "util/error.h"

namespace fm {
namespace {

namespace fs = std::filesystem;

// The whole file as a uint8 tensor [records, 3073], its length checked before anything is read.
torch::Tensor read_records(const fs::path& file) {
  const std::string name = file.string();
  std::error_code ec;
  const auto size = fs::file_size(file, ec);
  if (ec) throw file_error(name, "cannot read size (" + ec.message() + ")");
  if (size == 0) throw file_error(name, "empty file (expected records of 3073 bytes)");
  if (size % kCifar10RecordBytes != 0)
    throw file_error(name, "length " + std::to_string(size) + " bytes is not a multiple of the 3073-byte record (" +
                               std::to_string(size / kCifar10RecordBytes) + " whole records and " +
                               std::to_string(size % kCifar10RecordBytes) + " bytes left over: truncated or not a "
                               "CIFAR-10 binary batch)");
  const int64_t n = static_cast<int64_t>(size / kCifar10RecordBytes);
  auto records = torch::empty({n, kCifar10RecordBytes}, torch::kUInt8);
  std::ifstream f(file, std::ios::binary);
  if (!f) throw file_error(name, "cannot open");
  f.read(reinterpret_cast<char*>(records.data_ptr<uint8_t>()), static_cast<std::streamsize>(size));
  if (f.gcount() != static_cast<std::streamsize>(size)) throw file_error(name, "read error (file shrank while reading?)");
  return records;
}

fs::path resolve_dir(const std::string& dir) {
  fs::path d(dir);
  if (!fs::is_directory(d)) throw InputError("cifar10: '" + dir + "' is not a directory");
  // Accept the directory the archive unpacks into, or the one holding it.
  if (!fs::exists(d / "data_batch_1.bin") && !fs::exists(d / "test_batch.bin") &&
      fs::is_directory(d / "cifar-10-batches-bin"))
    d /= "cifar-10-batches-bin";
  return d;
}

}  // namespace

Dataset read_cifar10(const std::string& dir, Split split) {
  const fs::path d = resolve_dir(dir);
  std::vector<std::string> names;
  if (split == Split::train) {
    for (int i = 1; i <= 5; ++i) names.push_back("data_batch_" + std::to_string(i) + ".bin");
  } else {
    names.push_back("test_batch.bin");
  }
  std::string missing;
  for (const auto& n : names)
    if (!fs::is_regular_file(d / n)) missing += (missing.empty() ? "" : ", ") + n;
  if (!missing.empty()) {
    std::string hint = fs::exists(d / "data_batch_1") || fs::exists(d / "test_batch")
                           ? " (this looks like the Python version; fm reads the binary version, cifar-10-binary.tar.gz)"
                           : "";
    throw InputError("cifar10: " + d.string() + ": missing " + missing + hint);
  }

  std::vector<torch::Tensor> images, labels;
  for (const auto& n : names) {
    const fs::path file = d / n;
    auto rec = read_records(file);
    auto lab = rec.select(1, 0).to(torch::kLong);
    auto bad = (lab > 9).nonzero();
    if (bad.numel() > 0) {
      int64_t r = bad[0].item<int64_t>();
      throw file_error(file.string(), "record " + std::to_string(r) + " (byte offset " +
                                          std::to_string(r * kCifar10RecordBytes) + ") has label " +
                                          std::to_string(lab[r].item<int64_t>()) + ", expected 0..9");
    }
    labels.push_back(lab);
    images.push_back(rec.narrow(1, 1, 3 * 32 * 32).reshape({-1, 3, 32, 32}));
  }
  Dataset ds;
  ds.images = torch::cat(images);
  ds.labels = torch::cat(labels);
  ds.num_classes = 10;
  // batches.meta.txt's order, as torchvision's CIFAR10.classes lists them.
  ds.class_names = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
  return ds;
}

}  // namespace fm
