#pragma once
// The checks `fm train` makes before its first step, so that a run that cannot be right fails at once with exit 2
// instead of crashing hours later or silently training something else.
#include "checkpoint/checkpoint.h"
#include "config/config.h"
#include "data/dataset.h"
#include "nn/velocity_field.h"

namespace fm {

// The data's labels must index the model's class embedding: label num_classes is the null label of classifier-free
// guidance, and a larger one is out of range. Throws InputError naming model.unet.num_classes and the data's classes.
void check_data_fits_model(const Config& cfg, const Dataset& data);

// pairs:DIR data and path.coupling = pairs go together: either alone is refused naming the key.
void check_pairs_coupling(const Config& cfg, const Dataset& data);

// Whether the checkpoint train.init_from names can start this fresh run: the same model (type and its section) and
// samples of the run's data shape; InputError naming the key and each difference otherwise.
void check_init_from(const CheckpointReader& ck, const Config& cfg, const std::vector<int64_t>& sample_shape);

// Whether `ck` can continue the run `cfg` describes, checked before the data is loaded: train.steps may not be below
// the checkpoint's step, the model must be the same, and so must the objective (target, path, coupling, time sampler)
// unless train.resume_new_objective is set, which is logged; the messages name each differing key. The objective's keys
// include loss.type (and loss.huber_c for pseudo_huber).
void check_resume_config(const CheckpointReader& ck, const Config& cfg);

// Whether `data` is what `ck` was trained on (the data section but hflip, the image count and the class count).
// Other data is refused naming the differences, unless train.resume_new_data is set; returns true when the data
// differs and the batch sampler must start a fresh epoch rather than continue the checkpoint's order.
bool check_resume_data(const CheckpointReader& ck, const Config& cfg, const Dataset& data,
                       const std::vector<int64_t>& sample_shape);

// `cfg` as the resumed run records it: when train.steps differs from the checkpoint's, the decay schedule changes
// shape from the checkpoint's step on; this is logged with the learning rate before and after, and the checkpoint's
// train.steps is appended to train.earlier_steps.
Config resumed_config(const CheckpointReader& ck, const Config& cfg);

}  // namespace fm
