#include "checkpoint/checkpoint.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sys/stat.h>

#include "checkpoint/seal.h"
#include "io/file_util.h"
#include "util/error.h"

namespace fm {

namespace {
// 2: sealed, and records the data it was trained on.
constexpr int64_t kFormatVersion = 2;

at::Generator device_generator(const torch::Device& device) {
  return device.is_cpu() ? at::detail::getDefaultCPUGenerator() : at::globalContext().defaultGenerator(device);
}

torch::Tensor state_of(at::Generator gen) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_state(at::Generator gen, const torch::Tensor& state) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state.cpu());
}

std::string read_whole_file(const std::string& path) {
  require_checkpoint_file(path);
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) throw file_error(path, "no such checkpoint file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw file_error(path, std::string("cannot open checkpoint (") + std::strerror(errno) + ")");
  std::string bytes(static_cast<size_t>(st.st_size), '\0');
  if (!in.read(bytes.data(), st.st_size) || in.gcount() != st.st_size)
    throw file_error(path, "cannot read checkpoint (changed while reading, or an I/O error)");
  return bytes;
}
}  // namespace

void require_checkpoint_file(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) throw file_error(path, "no such checkpoint file");
}

void save_checkpoint(const std::string& path, const CheckpointContents& c) {
  torch::serialize::OutputArchive ar;
  ar.write("fm_format", torch::tensor(kFormatVersion));
  ar.write("config", c10::IValue(to_json(*c.config).dump()));
  ar.write("step", torch::tensor(c.step));
  ar.write("sample_shape", torch::tensor(c.sample_shape, torch::kLong));
  ar.write("data_name", c10::IValue(c.data.name));
  ar.write("data_size", torch::tensor(c.data.size));
  ar.write("data_classes", torch::tensor(c.data.num_classes));
  if (!c.class_names.empty()) ar.write("class_names", c10::IValue(nlohmann::json(c.class_names).dump()));
  torch::serialize::OutputArchive model, ema;
  c.model->save(model);
  c.ema->save(ema);
  ar.write("model", model);
  ar.write("ema", ema);
  if (c.optimizer) {
    torch::serialize::OutputArchive opt;
    c.optimizer->save(opt);
    ar.write("optimizer", opt);
  }
  if (c.sampler) {
    torch::serialize::OutputArchive s;
    c.sampler->save(s);
    ar.write("sampler", s);
  }
  ar.write("rng_cpu", state_of(at::detail::getDefaultCPUGenerator()));
  if (!c.device.is_cpu()) ar.write("rng_device", state_of(device_generator(c.device)));
  if (c.phema) {
    torch::serialize::OutputArchive phema;
    c.phema->save(phema);
    ar.write("phema", phema);
  }
  save_sealed_archive(path, ar);
}

void save_sealed_archive(const std::string& path, torch::serialize::OutputArchive& ar) {
  // Streamed to the file and hashed on the way, never held whole in memory (a 35M-parameter run's archive with its
  // optimizer state is about 0.6 GB).
  AtomicFile file(path);
  SealWriter seal;
  std::string failure;
  ar.save_to([&](const void* data, size_t size) -> size_t {
    // LibTorch's zip writer finishes the archive from its destructor when a write comes up short, and an exception
    // from there would abort: report the failure after save_to returns instead, writing nothing more.
    if (!failure.empty()) return size;
    try {
      file.write(data, size);
      seal.update(data, size);
    } catch (const std::exception& e) {
      failure = e.what();
    }
    return size;
  });
  if (!failure.empty()) throw std::runtime_error(failure);
  auto trailer = seal.trailer();
  file.write(trailer.data(), trailer.size());
  file.commit();
}

uint64_t load_sealed_archive(const std::string& path, const torch::Device& device,
                             torch::serialize::InputArchive& ar) {
  const std::string bytes = read_whole_file(path);
  const size_t payload = verify_seal(bytes.data(), bytes.size(), path);
  try {
    ar.load_from(bytes.data(), payload, device);
  } catch (const std::exception& e) {  // c10::Error mostly, but a corrupt archive's tables also throw std::out_of_range
    throw file_error(path, "checksum matches but the payload is not a LibTorch archive");
  }
  // The seal ends with the payload's hash (little-endian), which verify_seal has just checked.
  uint64_t hash = 0;
  for (size_t i = 0; i < 8; ++i) hash |= uint64_t(static_cast<unsigned char>(bytes[bytes.size() - 8 + i])) << (8 * i);
  return hash;
}

CheckpointReader::CheckpointReader(const std::string& path, const torch::Device& device) : path_(path) {
  load_sealed_archive(path, device, ar_);
  try {  // a field of the wrong type or shape throws c10::Error
    torch::Tensor version, step, shape, data_size, data_classes;
    c10::IValue cfg, data_name;
    if (!ar_.try_read("fm_format", version) || !ar_.try_read("config", cfg) || !ar_.try_read("step", step) ||
        !ar_.try_read("sample_shape", shape))
      throw file_error(path, "not an fm checkpoint (missing fm_format, config, step or sample_shape)");
    if (version.item<int64_t>() != kFormatVersion)
      throw file_error(path, "checkpoint format " + std::to_string(version.item<int64_t>()) + ", this fm reads " +
                                 std::to_string(kFormatVersion));
    if (!ar_.try_read("data_name", data_name) || !data_name.isString() || !ar_.try_read("data_size", data_size) ||
        !ar_.try_read("data_classes", data_classes))
      throw file_error(path, "not an fm checkpoint (missing data_name, data_size or data_classes)");
    if (!cfg.isString()) throw file_error(path, "stored config is not a string");
    try {
      config_ = config_from_json(nlohmann::json::parse(cfg.toStringRef()), path + " (stored config)");
    } catch (const nlohmann::json::exception& e) {
      throw file_error(path, std::string("stored config is not valid JSON: ") + e.what());
    }
    step_ = step.item<int64_t>();
    auto s = shape.cpu();
    shape_.assign(s.data_ptr<int64_t>(), s.data_ptr<int64_t>() + s.numel());
    data_ = {data_name.toStringRef(), data_size.item<int64_t>(), data_classes.item<int64_t>()};
    c10::IValue names;  // optional: checkpoints of unlabelled data (and older ones) have none
    if (ar_.try_read("class_names", names)) {
      try {
        auto j = nlohmann::json::parse(names.toStringRef());
        class_names_ = j.get<std::vector<std::string>>();
      } catch (const std::exception&) {
        throw file_error(path, "class_names is not a JSON list of strings");
      }
    }
  } catch (const c10::Error& e) {
    throw file_error(path, "not an fm checkpoint (a field is malformed: " +
                               std::string(e.what_without_backtrace()).substr(0, 200) + ")");
  }
}

void CheckpointReader::load_module(const std::string& key, torch::nn::Module& m) {
  torch::serialize::InputArchive sub;
  if (!ar_.try_read(key, sub)) throw file_error(path_, "checkpoint has no '" + key + "' weights");
  try {
    m.load(sub);
  } catch (const c10::Error& e) {
    throw file_error(path_, "'" + key + "' weights do not match the network built from the stored config");
  }
}

void CheckpointReader::load_optimizer(ArchiveState& opt) {
  torch::serialize::InputArchive sub;
  if (!ar_.try_read("optimizer", sub)) throw file_error(path_, "checkpoint has no optimizer state to resume from");
  try {
    opt.load(sub);
  } catch (const c10::Error& e) {
    throw file_error(path_, std::string("optimizer state: ") + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw file_error(path_, e.what());
  }
}

void CheckpointReader::load_sampler(BatchSampler& s) {
  torch::serialize::InputArchive sub;
  if (!ar_.try_read("sampler", sub)) throw file_error(path_, "checkpoint has no data sampler state to resume from");
  try {
    s.load(sub);
  } catch (const InputError& e) {
    throw file_error(path_, e.what());
  }
}

bool CheckpointReader::load_state(const std::string& key, ArchiveState& state) {
  torch::serialize::InputArchive sub;
  if (!ar_.try_read(key, sub)) return false;
  try {
    state.load(sub);
  } catch (const c10::Error& e) {
    throw file_error(path_, "'" + key + "': " + e.what_without_backtrace());
  } catch (const std::exception& e) {  // InputError too: its message names the key or setting at fault
    throw file_error(path_, "'" + key + "': " + e.what());
  }
  return true;
}

void CheckpointReader::restore_rng(const torch::Device& device) {
  torch::Tensor cpu, dev;
  if (ar_.try_read("rng_cpu", cpu)) {
    set_state(at::detail::getDefaultCPUGenerator(), cpu);
    if (!device.is_cpu() && ar_.try_read("rng_device", dev)) set_state(device_generator(device), dev);
    return;
  }
  // The earlier layout: rng_0 the CPU's stream, rng_1 cuda:0's, the device rank 0 trains on, and then the other
  // CUDA devices rank 0 saw but never drew from.
  if (!ar_.try_read("rng_0", cpu)) throw file_error(path_, "checkpoint holds no random-number state");
  set_state(at::detail::getDefaultCPUGenerator(), cpu);
  if (!device.is_cpu() && ar_.try_read("rng_1", dev)) set_state(device_generator(device), dev);
}

}  // namespace fm
