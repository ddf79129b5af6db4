#pragma once
// Every choice among named alternatives that a config key or a command-line option makes, as an enum with one table of
// names. The config reader and writer, the options' checks and --help, the data-spec parser and the error messages
// all take the names from these tables, so a new alternative is one enum value and one row; the factories that act on
// a choice are exhaustive switches over the enum.
#include <cstddef>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "util/error.h"

namespace fm {

enum class DataFormat { toy, cifar10, imagenet32, folder, npz, shapes, pairs };
enum class Split { train, test };
enum class ToyData { eight_gaussians, moons, checkerboard, spirals };
enum class ModelType { mlp, unet };
// What the network predicts (path/target.h).
enum class Target { velocity, noise, data, score };
// The probability path's schedule alpha_t, sigma_t (path/prob_path.h).
enum class PathType { cond_ot, vp, cosine, polynomial, linear_vp, torchcfm_vp };
// How a batch's noise is paired with its data (path/coupling.h).
enum class Coupling { independent, ot, sinkhorn, sb, pairs };
enum class TimeSampler { uniform, logit_normal, u_shaped };
// The training loss of the regression (path/target.h).
enum class LossType { mse, pseudo_huber };
enum class LrDecay { constant, linear, cosine, poly };
// meanflow: steps x_r = x_t + (r - t) u(x_t, t, r) by a network's average velocity (sample/generate.h), not an ODE's.
// euler_maruyama: the SDE solver of sample/sde.h.
enum class Solver { euler, midpoint, heun, rk4, dopri5, euler_maruyama, meanflow };
// The diffusion coefficient schedule w(t) of SDE sampling (sample/sde.h).
enum class Diffusion { sigma, constant, linear, decreasing, increasing_decreasing };
enum class TimeGrid { uniform, edm };
// What the network is trained on (train/objective.h): conditional flow matching, or MeanFlow's average velocity.
enum class ObjectiveType { cfm, meanflow };
// eval-nll's divergence of the velocity and Hutchinson's probe.
enum class Divergence { hutchinson, exact };
enum class Probe { rademacher, gaussian };
// Which weights of a checkpoint a command runs: the EMA average or the raw optimised ones.
enum class Weights { ema, raw };
// How FID brings images to the Inception network's 299x299 (fid/inception.h): pytorch-fid's bilinear resize, or
// clean-fid's "clean" mode (PIL's bicubic on float images).
enum class FidResize { pytorch_fid, clean };

// The table of names of a choice: ChoiceNames<E>::table lists every value of E once, in the order --help shows them.
template <class E>
struct ChoiceNames;

#define FM_CHOICE_NAMES(E, ...)                                                 \
  template <>                                                                   \
  struct ChoiceNames<E> {                                                       \
    static constexpr std::pair<E, const char*> table[] = {__VA_ARGS__};          \
  };

FM_CHOICE_NAMES(DataFormat, {DataFormat::toy, "toy"}, {DataFormat::cifar10, "cifar10"},
                {DataFormat::imagenet32, "imagenet32"}, {DataFormat::folder, "folder"}, {DataFormat::npz, "npz"},
                {DataFormat::shapes, "shapes"}, {DataFormat::pairs, "pairs"})
FM_CHOICE_NAMES(Split, {Split::train, "train"}, {Split::test, "test"})
FM_CHOICE_NAMES(ToyData, {ToyData::eight_gaussians, "eight_gaussians"}, {ToyData::moons, "moons"},
                {ToyData::checkerboard, "checkerboard"}, {ToyData::spirals, "spirals"})
FM_CHOICE_NAMES(ModelType, {ModelType::mlp, "mlp"}, {ModelType::unet, "unet"})
FM_CHOICE_NAMES(Target, {Target::velocity, "velocity"}, {Target::noise, "noise"}, {Target::data, "data"},
                {Target::score, "score"})
FM_CHOICE_NAMES(PathType, {PathType::cond_ot, "cond_ot"}, {PathType::vp, "vp"}, {PathType::cosine, "cosine"},
                {PathType::polynomial, "polynomial"}, {PathType::linear_vp, "linear_vp"},
                {PathType::torchcfm_vp, "torchcfm_vp"})
FM_CHOICE_NAMES(Coupling, {Coupling::independent, "independent"}, {Coupling::ot, "ot"},
                {Coupling::sinkhorn, "sinkhorn"}, {Coupling::sb, "sb"}, {Coupling::pairs, "pairs"})
FM_CHOICE_NAMES(TimeSampler, {TimeSampler::uniform, "uniform"}, {TimeSampler::logit_normal, "logit_normal"},
                {TimeSampler::u_shaped, "u_shaped"})
FM_CHOICE_NAMES(LossType, {LossType::mse, "mse"}, {LossType::pseudo_huber, "pseudo_huber"})
FM_CHOICE_NAMES(LrDecay, {LrDecay::constant, "constant"}, {LrDecay::linear, "linear"}, {LrDecay::cosine, "cosine"},
                {LrDecay::poly, "poly"})
FM_CHOICE_NAMES(Solver, {Solver::euler, "euler"}, {Solver::midpoint, "midpoint"}, {Solver::heun, "heun"},
                {Solver::rk4, "rk4"}, {Solver::dopri5, "dopri5"}, {Solver::euler_maruyama, "euler_maruyama"},
                {Solver::meanflow, "meanflow"})
FM_CHOICE_NAMES(Diffusion, {Diffusion::sigma, "sigma"}, {Diffusion::constant, "constant"}, {Diffusion::linear, "linear"},
                {Diffusion::decreasing, "decreasing"}, {Diffusion::increasing_decreasing, "increasing_decreasing"})
FM_CHOICE_NAMES(TimeGrid, {TimeGrid::uniform, "uniform"}, {TimeGrid::edm, "edm"})
FM_CHOICE_NAMES(ObjectiveType, {ObjectiveType::cfm, "cfm"}, {ObjectiveType::meanflow, "meanflow"})
FM_CHOICE_NAMES(Divergence, {Divergence::hutchinson, "hutchinson"}, {Divergence::exact, "exact"})
FM_CHOICE_NAMES(Probe, {Probe::rademacher, "rademacher"}, {Probe::gaussian, "gaussian"})
FM_CHOICE_NAMES(Weights, {Weights::ema, "ema"}, {Weights::raw, "raw"})
FM_CHOICE_NAMES(FidResize, {FidResize::pytorch_fid, "pytorch-fid"}, {FidResize::clean, "clean"})

#undef FM_CHOICE_NAMES

template <class E>
const char* name_of(E value) {
  for (const auto& [v, name] : ChoiceNames<E>::table)
    if (v == value) return name;
  return "?";  // unreachable: every value has a row
}

template <class E>
std::optional<E> choice_from(const std::string& name) {
  for (const auto& [v, n] : ChoiceNames<E>::table)
    if (name == n) return v;
  return std::nullopt;
}

template <class E>
std::vector<std::string> choice_names() {
  std::vector<std::string> names;
  for (const auto& row : ChoiceNames<E>::table) names.emplace_back(row.second);
  return names;
}

// A choice prints as its name (logs, CLI11's defaults).
template <class E, class = decltype(ChoiceNames<E>::table)>
std::ostream& operator<<(std::ostream& os, E value) {
  return os << name_of(value);
}

// "a, b, c" (or with another separator, "a | b | c" for --help).
template <class E>
std::string choice_list(const char* sep = ", ") {
  std::string s;
  for (const auto& row : ChoiceNames<E>::table) s += (s.empty() ? "" : sep) + std::string(row.second);
  return s;
}

// The message for a name that is none of `names`: "must be one of a, b, c (got "x"; did you mean "y"?)", the
// suggestion only where a name is close enough to be a typo of it.
std::string not_one_of(const std::string& got, const std::vector<std::string>& names);

// `name` as E, or InputError "WHAT: must be one of ... (got ...)" naming `what` (a key or an option).
template <class E>
E parse_choice(const std::string& name, const std::string& what) {
  if (auto v = choice_from<E>(name)) return *v;
  throw InputError(what + ": " + not_one_of(name, choice_names<E>()));
}

}  // namespace fm
