#include "nn/velocity_field.h"
#include "util/error.h"

namespace fm {
std::shared_ptr<VelocityField> make_unet_velocity(const UNetConfig&, const std::vector<int64_t>&) {
  throw InputError("model.type: unet is not built yet");
}
}  // namespace fm
