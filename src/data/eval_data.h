#pragma once
// The data an evaluation reads: the set named on the command line, or, when none is named, the set the checkpoint was
// trained on (its config's format, path and resolution). A set that resizes its images (folder, shapes) and names no
// resolution takes the model's, so that `--data shapes:200` evaluates a 16x16 model on 16x16 shapes.
#include <string>
#include <vector>

#include "config/config.h"

namespace fm {

struct EvalData {
  DataConfig config;         // what to pass to load_dataset: split set, no training limit, no flips
  std::string spec;          // "format:path"
  bool from_checkpoint = false;
  std::string description;   // for logs and JSON: the spec, the image size, where it came from and which split
};

// Formats with a train/test split (the others ignore `split`).
bool has_splits(DataFormat format);

// `spec` empty: the checkpoint's `trained_on`. `sample_shape` is the model's ({C, H, W} for images, {2} for toys);
// `split` is used where the format has splits. Throws InputError for a bad spec.
EvalData resolve_eval_data(const std::string& spec, const DataConfig& trained_on,
                           const std::vector<int64_t>& sample_shape, Split split);

// InputError unless `data_shape` (from the loaded set) is the model's `model_shape`; names both and the checkpoint.
void check_eval_data_shape(const EvalData& data, const std::vector<int64_t>& data_shape,
                           const std::vector<int64_t>& model_shape, const std::string& checkpoint);

}  // namespace fm
