#pragma once
// The run configuration: typed structs with a default for every key. The JSON form mirrors the structs one to one;
// `visit` below is the single place that lists the keys, so reading, writing, `--set` and validation cannot drift apart.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/choices.h"

namespace fm {

struct DataConfig {
  DataFormat format = DataFormat::toy;
  std::string path;                  // directory or file; toy: the distribution (default checkerboard); shapes: N;
                                     // a "format:path" spec also works
  Split split = Split::train;        // cifar10, imagenet32
  int64_t resolution = 0;            // folder/shapes: image size (0 = keep the files' own size)
  bool center_crop = false;          // folder: center-crop to square before resizing
  bool hflip = true;                 // random horizontal flips of image batches
  int64_t limit = 0;                 // use N images evenly spread over the set (evenly_spread; 0 = all)
  int64_t size = 10000;              // shapes: how many images to generate
};

struct MlpConfig {
  int64_t hidden = 256;
  int64_t depth = 4;  // hidden layers
  int64_t time_features = 32;
  int64_t x_frequencies = 0;  // > 0: also feed sin/cos of x at frequencies 0.5 * 2^k, k < x_frequencies
  bool second_time = false;   // also take a second time r (the average velocity from t to r; nn/velocity_field.h)
};

struct UNetConfig {
  int64_t model_channels = 128;
  int64_t num_res_blocks = 2;
  std::vector<int64_t> channel_mult = {1, 2, 2, 2};
  std::vector<int64_t> attention_resolutions = {16};
  int64_t num_heads = 4;
  int64_t num_head_channels = 64;  // -1: use num_heads
  double dropout = 0.0;
  bool use_scale_shift_norm = false;
  bool resblock_updown = false;
  bool conv_resample = true;  // false: average-pool down, plain nearest up
  int64_t num_classes = 0;    // >0: class-conditional, with a null label for classifier-free guidance
  double class_dropout = 0.1; // probability of training with the null label
  bool second_time = false;   // also take a second time r: an embedding of r - t added to t's (nn/velocity_field.h)
};

struct ModelConfig {
  ModelType type = ModelType::mlp;
  Target target = Target::velocity;  // what the network predicts (see path/target.h)
  MlpConfig mlp;
  UNetConfig unet;
};

// Noise at t=0, data at t=1 (the paper's convention).
struct PathConfig {
  PathType type = PathType::cond_ot;
  double sigma_min = 0.0;
  double beta_min = 0.1;
  double beta_max = 20.0;
  double poly_n = 2.0;                  // polynomial: alpha_t = t^n
  Coupling coupling = Coupling::independent;  // how a batch's noise is paired with its data
  double ot_reg = 0.05;                 // sinkhorn: entropic regularisation, in units of the squared distance
  int64_t sinkhorn_iters = 100;         // sinkhorn, sb: Sinkhorn iterations per batch
  double sb_sigma = 1.0;                // sb: Brownian-bridge noise sigma sqrt(t(1-t)); its plan uses reg 2 sigma^2
};

// MeanFlow (Geng et al. 2025; train/meanflow_objective.h). The times here are in the paper's convention, data at 0
// and noise at 1, so that its numbers are copied unchanged; the objective translates them once.
struct MeanFlowConfig {
  double t_loc = -2.0, t_scale = 2.0;  // the paper's t ~ sigmoid(loc + scale n), n ~ N(0, 1)
  double r_loc = -2.0, r_scale = 2.0;  // the paper's r, drawn alike; then sorted so that r <= t
  double equal_share = 0.25;           // share of rows trained with r = t (plain flow matching)
  double norm_p = 0.75;                // adaptive weight 1 / (|delta|^2 + norm_c)^norm_p
  double norm_c = 1e-3;
  double omega = 1.0;                  // guidance folded into the target: omega = 1, kappa = 0 is none
  double kappa = 0.0;
  double guidance_t_min = 0.0, guidance_t_max = 1.0;  // the paper's t interval that gets guidance
};

struct ObjectiveConfig {
  ObjectiveType type = ObjectiveType::cfm;
  MeanFlowConfig meanflow;
};

struct TimeConfig {
  TimeSampler sampler = TimeSampler::uniform;
  double loc = 0.0;
  double scale = 1.0;
  double u_shaped_a = 4.0;  // u_shaped: p(t) proportional to cosh(a (t - 1/2)) on [0, 1] (Lee et al. 2024: a = 4)
};

// The regression loss between the network's output and its target (path/target.h).
struct LossConfig {
  LossType type = LossType::mse;
  double huber_c = 0.0;  // pseudo_huber: c of sqrt(|r|^2 + c^2) - c; 0: 0.00054 sqrt(d), d the data dimension
};

struct TrainConfig {
  int64_t steps = 2000;
  int64_t batch_size = 256;
  double lr = 1e-3;
  std::vector<double> betas = {0.9, 0.999};
  double eps = 1e-8;
  double weight_decay = 0.0;
  int64_t warmup_steps = 0;
  LrDecay decay = LrDecay::constant;
  double decay_power = 1.0;        // poly: lr scale (1 - progress)^power
  double final_lr_scale = 0.0;     // lr at the last step as a fraction of lr (linear, cosine, poly)
  double grad_clip = 0.0;          // max global gradient norm (0 = off)
  double ema_decay = 0.999;
  // Post-hoc EMA (Karras et al. 2024, EDM2; train/phema.h): the power-function profiles kept, by relative length, and
  // a snapshot of them every N steps into RUN/phema (0 = off: no profiles kept); the newest K snapshots stay (0 = all).
  std::vector<double> phema_sigma_rels = {0.05, 0.10};
  int64_t ema_snapshot_every = 0;
  int64_t ema_snapshots_keep = 0;
  int64_t log_every = 100;
  int64_t ckpt_every = 1000;
  int64_t keep_last = 3;
  int64_t sample_every = 0;  // images: a sample grid every N steps (0 = at the end only)
  bool bf16 = true;          // bf16 autocast on CUDA (fp32 master weights); ignored on CPU
  bool cuda_graph = false;   // CUDA only: replay the whole training step as one captured CUDA graph (train_step_graph.h)
  bool resume_new_data = false;        // a resume may continue on other data than the checkpoint's (a fresh epoch)
  bool resume_new_objective = false;   // a resume may continue with another objective (path, time sampler, target)
  // A record, not a setting: train.steps before resumes changed it, oldest first. fm train writes it into the run's
  // config.json; it is neither offered by --set nor suggested for a mistyped key.
  std::vector<int64_t> earlier_steps;
  int64_t max_nonfinite_steps = 100;  // this many skipped (non-finite) steps in a row stop the run
  bool tensorboard = true;   // TensorBoard event file in the run directory: metrics as scalars, sample grids as images
  std::string init_from;     // a checkpoint whose model and EMA weights a fresh run starts from (not its optimizer or step)
};

struct SampleConfig {
  Solver solver = Solver::midpoint;
  int64_t steps = 100;
  double atol = 1e-5;
  double rtol = 1e-5;
  TimeGrid time_grid = TimeGrid::uniform;  // fixed-step solvers
  int64_t n = 4000;                   // samples drawn for the run's own figures
  bool cuda_graph = false;  // CUDA only: replay the network as a captured CUDA graph (sample/graphed_velocity.h)
  // euler_maruyama (sample/sde.h): the diffusion coefficient w(t), its scale, and the size of the final noise-free step.
  Diffusion diffusion = Diffusion::sigma;
  double diffusion_norm = 1.0;
  double sde_last_step = 0.04;
};

// Multi-process jobs (torchrun, srun; see dist/world.h).
struct DistConfig {
  // Longest any rank waits for the others in a collective (or to join) before the job ends with an error; must cover
  // rank 0 writing a checkpoint or a sample grid while the others wait.
  double timeout_s = 600.0;
};

struct Config {
  std::string comment;
  int64_t seed = 0;
  std::string device = "auto";
  DataConfig data;
  ModelConfig model;
  PathConfig path;
  TimeConfig time;
  LossConfig loss;
  ObjectiveConfig objective;
  TrainConfig train;
  SampleConfig sample;
  DistConfig dist;
};

// The JSON form of a config, every key present.
nlohmann::json to_json(const Config& c);

// Reads a config from JSON. `source` names where it came from (a file) for error messages; unknown keys, wrong types
// and out-of-range values throw InputError naming "source: key.path: problem".
Config config_from_json(const nlohmann::json& j, const std::string& source);

// Applies `key.path=value` overrides (value parsed with the key's own type) to a config document.
void apply_overrides(nlohmann::json& doc, const std::vector<std::string>& overrides);

// Reads `path`, applies overrides, validates.
Config load_config(const std::string& path, const std::vector<std::string>& overrides);

// The dotted keys a user sets (all but records such as train.earlier_steps), for suggestions and docs.
std::vector<std::string> config_keys();

}  // namespace fm
