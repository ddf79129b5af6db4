#include "train/phema.h"

#include <nlohmann/json.hpp>

#include "checkpoint/phema_math.h"
#include "checkpoint/phema_snapshot.h"
#include "util/cpu_generator_kept.h"
#include "util/error.h"

namespace fm {

namespace {

std::string lengths_text(const std::vector<double>& v) { return nlohmann::json(v).dump(); }

}  // namespace

std::vector<double> tracked_sigma_rels(const TrainConfig& train) {
  if (train.ema_snapshot_every == 0) return {};
  if (train.phema_sigma_rels.empty())
    throw InputError("train.phema_sigma_rels: empty, but train.ema_snapshot_every is " +
                     std::to_string(train.ema_snapshot_every) +
                     ": the snapshots need at least one profile (EDM2 keeps two, [0.05, 0.1])");
  return train.phema_sigma_rels;
}

PowerEma::PowerEma(std::vector<double> sigma_rels, torch::nn::Module& model,
                   const std::function<std::shared_ptr<torch::nn::Module>()>& make_network)
    : sigma_rels_(std::move(sigma_rels)), model_params_(model.parameters()), model_buffers_(model.buffers()) {
  if (sigma_rels_.empty()) return;
  const auto device = model_params_.front().device();
  std::vector<double> gp1;
  {
    CpuGeneratorKept kept;
    for (double s : sigma_rels_) {
      profiles_.push_back(make_network());
      gp1.push_back(phema::sigma_rel_to_gamma(s) + 1.0);
    }
  }
  torch::NoGradGuard ng;
  for (auto& p : profiles_) {
    params_.push_back(p->parameters());
    buffers_.push_back(p->buffers());
    TORCH_CHECK(params_.back().size() == model_params_.size(), "post-hoc EMA: profile and model differ in structure");
    for (size_t i = 0; i < model_params_.size(); ++i) {
      params_.back()[i].set_requires_grad(false);
      params_.back()[i].copy_(model_params_[i]);
    }
    for (size_t i = 0; i < model_buffers_.size(); ++i) buffers_.back()[i].copy_(model_buffers_[i]);
  }
  steps_ = torch::zeros({}, torch::TensorOptions(torch::kFloat64).device(device));
  gamma_plus_1_ = torch::tensor(gp1, torch::kFloat64).to(device);
}

void PowerEma::update(const torch::Tensor& found_inf) {
  if (!on()) return;
  torch::NoGradGuard ng;
  steps_.add_(1.0);
  // (1 - beta_k(t)) for every profile at once, kept from moving where the step was skipped.
  auto keep = torch::pow(1.0 - steps_.reciprocal(), gamma_plus_1_);
  auto w = ((1.0 - keep) * (1.0 - found_inf.to(torch::kFloat64))).to(model_params_.front().scalar_type());
  for (size_t k = 0; k < profiles_.size(); ++k) {
    // _foreach_lerp_ takes a device weight as one tensor per parameter: the same 0-dim tensor, broadcast.
    at::_foreach_lerp_(params_[k], model_params_, std::vector<torch::Tensor>(model_params_.size(), w[k]));
    for (size_t i = 0; i < model_buffers_.size(); ++i) buffers_[k][i].copy_(model_buffers_[i]);
  }
}

void PowerEma::set_steps(int64_t steps) {
  if (on()) steps_.fill_(static_cast<double>(steps));
}

std::vector<torch::Tensor> PowerEma::parameters() const {
  std::vector<torch::Tensor> all;
  for (const auto& p : params_) all.insert(all.end(), p.begin(), p.end());
  return all;
}

void PowerEma::save(torch::serialize::OutputArchive& ar) const {
  std::vector<torch::nn::Module*> modules;
  for (const auto& p : profiles_) modules.push_back(p.get());
  write_profiles(ar, sigma_rels_, modules);
}

void PowerEma::load(torch::serialize::InputArchive& ar) {
  const auto stored = read_sigma_rels(ar);
  if (stored != sigma_rels_)
    throw InputError("train.phema_sigma_rels: " + lengths_text(sigma_rels_) + ", but the checkpoint's post-hoc EMA "
                     "profiles are " + lengths_text(stored) + "; a profile averages from the first step, so the "
                     "lengths cannot change mid-run: set train.phema_sigma_rels=" + lengths_text(stored) +
                     " to continue");
  for (size_t k = 0; k < profiles_.size(); ++k)
    if (!read_profile(ar, k, *profiles_[k]))
      throw InputError("the checkpoint's post-hoc EMA lacks profile " + std::to_string(k));
}

void restore_profiles(CheckpointReader& ck, PowerEma& phema) {
  if (!phema.on()) return;
  if (!ck.load_state("phema", phema) && ck.step() > 0)
    throw file_error(ck.path(), "kept no post-hoc EMA profiles, and a power-function profile averages from the first "
                                "step, so this run cannot start them at step " + std::to_string(ck.step()) +
                                ": continue it with train.ema_snapshot_every=0, or train afresh");
  phema.set_steps(ck.step());
}

}  // namespace fm
