#pragma once
// Checkpoints: one LibTorch archive holding the model, its EMA, the optimizer, the step, the batch sampler's position,
// the RNG states, the resolved config and what data it was trained on, so that a resumed run continues exactly where
// it stopped. The archive is sealed with a checksum (checkpoint/seal.h) that is verified before anything is parsed,
// and written through AtomicFile: a crash or a full disk never leaves a half-written checkpoint under a final name.
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "checkpoint/checkpoint_dir.h"
#include "config/config.h"
#include "data/batch_sampler.h"

namespace fm {

// What a run trained on, so that a resume on other data is noticed (the sampler's saved order indexes this data).
struct DataIdentity {
  std::string name;         // the spec, as Dataset::name
  int64_t size = 0;         // images (0 for 2-D toys)
  int64_t num_classes = 0;  // 0 without labels
};

// State with its own archive form that a checkpoint carries without knowing its type (the optimizer, from train/).
struct ArchiveState {
  virtual ~ArchiveState() = default;
  virtual void save(torch::serialize::OutputArchive& ar) const = 0;
  virtual void load(torch::serialize::InputArchive& ar) = 0;
};

struct CheckpointContents {
  const Config* config = nullptr;
  int64_t step = 0;
  std::vector<int64_t> sample_shape;
  DataIdentity data;
  torch::nn::Module* model = nullptr;
  torch::nn::Module* ema = nullptr;
  const ArchiveState* optimizer = nullptr;       // optional
  const BatchSampler* sampler = nullptr;         // optional
  std::vector<std::string> class_names;          // the data's class index -> name (empty: none known)
  // The device the run trains on: its default generator's state is stored beside the CPU's.
  torch::Device device = torch::kCPU;
  // Optional: the post-hoc EMA profiles (train/phema.h), under "phema"; CheckpointReader::load_state reads them back.
  const ArchiveState* phema = nullptr;
};

// The file form every sealed fm archive shares (checkpoints, post-hoc EMA snapshots): `ar` streamed to `path` through
// AtomicFile with its seal (checkpoint/seal.h) after it; throws naming `path` and the cause when the write fails.
void save_sealed_archive(const std::string& path, torch::serialize::OutputArchive& ar);
// Reads `path` whole, verifies its seal (CorruptCheckpoint if it fails) and opens the archive into `ar`, mapping
// tensors to `device`; InputError naming the file when it is not a LibTorch archive. Returns the payload's hash, as the
// seal records it.
uint64_t load_sealed_archive(const std::string& path, const torch::Device& device, torch::serialize::InputArchive& ar);

// Writes the checkpoint to `path` (atomically, sealed); throws naming `path` and the cause when the write fails.
void save_checkpoint(const std::string& path, const CheckpointContents& c);

// Throws InputError naming `path` unless it is a regular file: what a command checks before it creates its outputs.
void require_checkpoint_file(const std::string& path);

class CheckpointReader {
 public:
  // Reads `path` whole, verifies its seal (CorruptCheckpoint if it fails), then opens the archive mapping tensors to
  // `device`; throws InputError naming the file if it is not an fm checkpoint.
  CheckpointReader(const std::string& path, const torch::Device& device);
  const std::string& path() const { return path_; }
  const Config& config() const { return config_; }
  int64_t step() const { return step_; }
  const std::vector<int64_t>& sample_shape() const { return shape_; }
  const DataIdentity& data() const { return data_; }
  // The training data's class names by index (empty for checkpoints without them or unlabelled data).
  const std::vector<std::string>& class_names() const { return class_names_; }

  // key: "model" or "ema".
  void load_module(const std::string& key, torch::nn::Module& m);
  void load_optimizer(ArchiveState& opt);
  void load_sampler(BatchSampler& s);
  // Loads the state stored under `key` ("phema"); false when the checkpoint has none (written without it, or older).
  bool load_state(const std::string& key, ArchiveState& state);
  // Sets the CPU's default generator and `device`'s to the streams the checkpoint stores. Every rank of a job draws
  // the same training stream (the global batch's noise, times and order), so the stream rank 0 saved of its own
  // device is the one every rank continues on its own device, whichever device index that is.
  void restore_rng(const torch::Device& device);

 private:
  std::string path_;
  torch::serialize::InputArchive ar_;
  Config config_;
  int64_t step_ = 0;
  std::vector<int64_t> shape_;
  DataIdentity data_;
  std::vector<std::string> class_names_;
};

}  // namespace fm
