#pragma once
// The power-function EMA profiles a run keeps for post-hoc EMA (Karras et al. 2024, EDM2; the math in
// checkpoint/phema_math.h): one copy of the network per length in train.phema_sigma_rels, each averaged after every
// step with its own decay beta = (1 - 1/t)^(gamma + 1). They are kept while train.ema_snapshot_every > 0, saved in
// every checkpoint (so a resume continues them exactly) and snapshotted by train/phema_snapshots.h; `fm ema` combines
// the snapshots into an EMA of any length afterwards.
#include <functional>
#include <memory>
#include <vector>

#include <torch/torch.h>

#include "checkpoint/checkpoint.h"
#include "config/config.h"

namespace fm {

// The lengths a run tracks: train.phema_sigma_rels while train.ema_snapshot_every > 0, none otherwise. InputError when
// snapshots are asked for without a profile to snapshot.
std::vector<double> tracked_sigma_rels(const TrainConfig& train);

class PowerEma : public ArchiveState {
 public:
  // One profile per sigma_rel (none: every call does nothing), each a network from `make_network` (the model's
  // structure, device and layout) set to the model's weights. Building them draws nothing from the random streams, so
  // a run trains the same with or without profiles.
  PowerEma(std::vector<double> sigma_rels, torch::nn::Module& model,
           const std::function<std::shared_ptr<torch::nn::Module>()>& make_network);

  bool on() const { return !profiles_.empty(); }
  const std::vector<double>& sigma_rels() const { return sigma_rels_; }
  // After a step: t <- t + 1, then profile k <- lerp(profile k, model, (1 - found_inf)(1 - beta_k(t))), beta from the
  // device's count of steps t, so nothing is read back to the host and a captured CUDA graph replays it correctly.
  // found_inf (a float32 device scalar from the non-finite guard) 1 leaves every profile as it is; t counts the step
  // all the same. One fused lerp per profile.
  void update(const torch::Tensor& found_inf);
  // The profiles continue after `steps` steps (a resume; their weights come from load).
  void set_steps(int64_t steps);
  // Every profile's parameters, for the finite check before a checkpoint is written.
  std::vector<torch::Tensor> parameters() const;

  // The checkpoint's "phema" and the snapshots' layout (checkpoint/phema_snapshot.h).
  void save(torch::serialize::OutputArchive& ar) const override;
  // InputError naming train.phema_sigma_rels when the stored lengths are not this run's.
  void load(torch::serialize::InputArchive& ar) override;

 private:
  std::vector<double> sigma_rels_;
  std::vector<std::shared_ptr<torch::nn::Module>> profiles_;
  std::vector<torch::Tensor> model_params_, model_buffers_;
  std::vector<std::vector<torch::Tensor>> params_, buffers_;
  torch::Tensor steps_;       // float64 device scalar: the steps taken
  torch::Tensor gamma_plus_1_;  // float64 on the device, one per profile
};

// On a resume: the checkpoint's profiles into `phema` at the checkpoint's step. InputError when the run keeps
// profiles and the checkpoint (of a step > 0) has none: a power-function profile averages from the first step, so it
// cannot start mid-run. A checkpoint's profiles are ignored by a run that keeps none.
void restore_profiles(CheckpointReader& ck, PowerEma& phema);

}  // namespace fm
