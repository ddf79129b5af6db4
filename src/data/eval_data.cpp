#include "data/eval_data.h"

#include "data/dataset.h"
#include "util/error.h"

namespace fm {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  if (s.size() == 3) return std::to_string(s[0]) + "x" + std::to_string(s[1]) + "x" + std::to_string(s[2]);
  std::string r;
  for (size_t i = 0; i < s.size(); ++i) r += (i ? "x" : "") + std::to_string(s[i]);
  return r;
}

bool resizes(DataFormat format) { return format == DataFormat::folder || format == DataFormat::shapes; }

}  // namespace

bool has_splits(DataFormat format) { return format == DataFormat::cifar10 || format == DataFormat::imagenet32; }

EvalData resolve_eval_data(const std::string& spec, const DataConfig& trained_on,
                           const std::vector<int64_t>& sample_shape, Split split) {
  EvalData d;
  d.from_checkpoint = spec.empty();
  if (d.from_checkpoint) {
    d.config = trained_on;
    d.config.limit = 0;  // the training run's subset is a training choice, not the data set
  } else {
    d.config = parse_data_spec(spec);
    if (trained_on.format == d.config.format && d.config.format == DataFormat::folder)
      d.config.center_crop = trained_on.center_crop;
  }
  d.config.hflip = false;
  if (d.config.format == DataFormat::pairs)
    throw InputError((d.from_checkpoint ? "the checkpoint's data " : "--data ") + data_spec(d.config) +
                     ": fm reflow's pairs are samples of a flow, not data to evaluate on; pass --data with the set "
                     "that flow was trained on");
  const bool images = sample_shape.size() == 3;
  if (!d.from_checkpoint && images && resizes(d.config.format) && d.config.resolution == 0 &&
      sample_shape[1] == sample_shape[2])
    d.config.resolution = sample_shape[1];
  d.config.split = split;
  d.spec = data_spec(d.config);

  d.description = d.spec;
  if (d.config.resolution > 0) d.description += " at " + std::to_string(d.config.resolution) + "x" +
                                                std::to_string(d.config.resolution);
  if (has_splits(d.config.format)) d.description += std::string(", ") + name_of(split) + " split";
  d.description += d.from_checkpoint ? " (the data the checkpoint was trained on" : " (from the command line";
  if (d.config.format != DataFormat::toy && !has_splits(d.config.format))
    d.description += std::string("; ") + name_of(d.config.format) + " has no test split";
  d.description += ")";
  return d;
}

void check_eval_data_shape(const EvalData& data, const std::vector<int64_t>& data_shape,
                           const std::vector<int64_t>& model_shape, const std::string& checkpoint) {
  if (data_shape == model_shape) return;
  throw InputError((data.from_checkpoint ? "the checkpoint's data " : "--data ") + data.spec + ": samples of " +
                   shape_str(data_shape) + " but " + checkpoint + " was trained on " + shape_str(model_shape) +
                   (resizes(data.config.format) ? "" : std::string(" (") + name_of(data.config.format) +
                                                          " images are not resized)"));
}

}  // namespace fm
