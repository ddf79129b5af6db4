#pragma once
// Checkpoints: one LibTorch archive holding the model, its EMA, the optimizer, the step, the batch sampler's position,
// the RNG states and the resolved config, so that a resumed run continues exactly where it stopped. Written to a
// temporary file, flushed and renamed, so a crash never leaves a half-written checkpoint under a final name.
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "config/config.h"
#include "data/batch_sampler.h"

namespace fm {

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
  torch::nn::Module* model = nullptr;
  torch::nn::Module* ema = nullptr;
  const ArchiveState* optimizer = nullptr;       // optional
  const BatchSampler* sampler = nullptr;         // optional
};

void save_checkpoint(const std::string& path, const CheckpointContents& c);

class CheckpointReader {
 public:
  // Opens `path`, mapping tensors to `device`; throws InputError naming the file if it is not an fm checkpoint.
  CheckpointReader(const std::string& path, const torch::Device& device);
  const Config& config() const { return config_; }
  int64_t step() const { return step_; }
  const std::vector<int64_t>& sample_shape() const { return shape_; }

  // key: "model" or "ema".
  void load_module(const std::string& key, torch::nn::Module& m);
  void load_optimizer(ArchiveState& opt);
  void load_sampler(BatchSampler& s);
  void restore_rng();

 private:
  std::string path_;
  torch::serialize::InputArchive ar_;
  Config config_;
  int64_t step_ = 0;
  std::vector<int64_t> shape_;
};

// Checkpoint files in a run's checkpoint directory are named ckpt_<step>.pt.
std::string checkpoint_name(int64_t step);
// The newest checkpoint in `dir` (by step), if any.
std::optional<std::string> latest_checkpoint(const std::string& dir);
// Deletes all but the newest `keep` checkpoints in `dir`.
void prune_checkpoints(const std::string& dir, int64_t keep);

}  // namespace fm
