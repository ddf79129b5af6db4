#pragma once
// The figures a training run draws for people from its EMA weights: a grid of samples every train.sample_every steps
// (image data), and at the end samples.png (with trajectories.png for 2-D toys). Each is drawn from fixed noise of
// its own generator, so that grids at different steps are comparable and the training streams are untouched.
#include <string>
#include <vector>

#include "config/config.h"
#include "data/dataset.h"
#include "nn/velocity_field.h"

namespace fm {

class RunFigures {
 public:
  RunFigures(const Config& cfg, const Dataset& data, VelocityField& ema_model, const std::string& run_dir,
             const torch::Device& device);
  // A grid is due at multiples of train.sample_every on image data, except at the last step (samples.png then).
  bool grid_due(int64_t step) const;
  // Writes grid_<step>.png; returns its path.
  std::string grid(int64_t step);
  // Writes the end-of-run figures; returns the path of samples.png.
  std::string final_figures();

 private:
  void write_grid(const std::string& path);
  const Config& cfg_;
  const Dataset& data_;
  VelocityField& model_;
  std::string dir_;
  torch::Device device_;
};

}  // namespace fm
