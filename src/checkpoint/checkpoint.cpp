#include "checkpoint/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <regex>
#include <sstream>

#include "io/file_util.h"
#include "util/error.h"

namespace fm {
namespace fs = std::filesystem;

namespace {
constexpr int64_t kFormatVersion = 1;

std::vector<at::Generator> generators() {
  std::vector<at::Generator> g{at::detail::getDefaultCPUGenerator()};
  if (torch::cuda::is_available())
    for (int64_t i = 0; i < static_cast<int64_t>(torch::cuda::device_count()); ++i)
      g.push_back(at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i))));
  return g;
}
}  // namespace

void save_checkpoint(const std::string& path, const CheckpointContents& c) {
  torch::serialize::OutputArchive ar;
  ar.write("fm_format", torch::tensor(kFormatVersion));
  ar.write("config", c10::IValue(to_json(*c.config).dump()));
  ar.write("step", torch::tensor(c.step));
  ar.write("sample_shape", torch::tensor(c.sample_shape, torch::kLong));
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
  auto gens = generators();
  ar.write("rng_count", torch::tensor(static_cast<int64_t>(gens.size())));
  for (size_t i = 0; i < gens.size(); ++i) {
    std::lock_guard<std::mutex> lock(gens[i].mutex());
    ar.write("rng_" + std::to_string(i), gens[i].get_state());
  }
  std::ostringstream out;
  ar.save_to(out);
  write_file_atomic(path, out.str());
}

CheckpointReader::CheckpointReader(const std::string& path, const torch::Device& device) : path_(path) {
  if (!fs::is_regular_file(path)) throw file_error(path, "no such checkpoint file");
  try {
    ar_.load_from(path, device);
  } catch (const std::exception& e) {  // c10::Error mostly, but a corrupt archive's tables also throw std::out_of_range
    throw file_error(path, "not a readable checkpoint (truncated or not a LibTorch archive)");
  }
  try {  // a field of the wrong type or shape throws c10::Error
  torch::Tensor version, step, shape;
  c10::IValue cfg;
  if (!ar_.try_read("fm_format", version) || !ar_.try_read("config", cfg) || !ar_.try_read("step", step) ||
      !ar_.try_read("sample_shape", shape))
    throw file_error(path, "not an fm checkpoint (missing fm_format, config, step or sample_shape)");
  if (version.item<int64_t>() != kFormatVersion)
    throw file_error(path, "checkpoint format " + std::to_string(version.item<int64_t>()) + ", this fm reads " +
                               std::to_string(kFormatVersion));
  try {
    config_ = config_from_json(nlohmann::json::parse(cfg.toStringRef()), path + " (stored config)");
  } catch (const nlohmann::json::exception& e) {
    throw file_error(path, std::string("stored config is not valid JSON: ") + e.what());
  }
  step_ = step.item<int64_t>();
  auto s = shape.cpu();
  shape_.assign(s.data_ptr<int64_t>(), s.data_ptr<int64_t>() + s.numel());
  } catch (const c10::Error& e) {
    throw file_error(path, "not an fm checkpoint (fm_format, config, step or sample_shape is malformed)");
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

void CheckpointReader::load_optimizer(torch::optim::Optimizer& opt) {
  torch::serialize::InputArchive sub;
  if (!ar_.try_read("optimizer", sub)) throw file_error(path_, "checkpoint has no optimizer state to resume from");
  opt.load(sub);
}

void CheckpointReader::load_sampler(BatchSampler& s) {
  torch::serialize::InputArchive sub;
  if (!ar_.try_read("sampler", sub)) throw file_error(path_, "checkpoint has no data sampler state to resume from");
  s.load(sub);
}

void CheckpointReader::restore_rng() {
  torch::Tensor count;
  ar_.read("rng_count", count);
  auto gens = generators();
  int64_t n = std::min<int64_t>(count.item<int64_t>(), static_cast<int64_t>(gens.size()));
  for (int64_t i = 0; i < n; ++i) {
    torch::Tensor state;
    ar_.read("rng_" + std::to_string(i), state);
    std::lock_guard<std::mutex> lock(gens[i].mutex());
    gens[i].set_state(state.cpu());
  }
}

std::string checkpoint_name(int64_t step) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "ckpt_%09lld.pt", static_cast<long long>(step));
  return buf;
}

namespace {
std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  if (!fs::is_directory(dir)) return out;
  static const std::regex re(R"(ckpt_(\d+)\.pt)");
  for (const auto& e : fs::directory_iterator(dir)) {
    std::smatch m;
    std::string name = e.path().filename().string();
    if (e.is_regular_file() && std::regex_match(name, m, re)) out.emplace_back(std::stoll(m[1]), e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}
}  // namespace

std::optional<std::string> latest_checkpoint(const std::string& dir) {
  auto all = list_checkpoints(dir);
  if (all.empty()) return std::nullopt;
  return all.back().second;
}

void prune_checkpoints(const std::string& dir, int64_t keep) {
  auto all = list_checkpoints(dir);
  for (size_t i = 0; i + keep < all.size(); ++i) fs::remove(all[i].second);
}

}  // namespace fm
