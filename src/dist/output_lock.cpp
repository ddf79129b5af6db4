#include "dist/output_lock.h"

#include "io/file_util.h"
#include "util/error.h"

namespace fm::dist {

std::unique_ptr<RunLock> lock_output_dir(World& world, const std::string& dir, const std::string& option) {
  std::unique_ptr<RunLock> lock;
  std::string refused;
  if (world.is_main()) {
    try {
      prepare_output_dir(dir, option);
      lock = std::make_unique<RunLock>(RunLock::in_dir(dir), option + " " + dir);
    } catch (const InputError& e) {
      refused = e.what();
    }
  }
  if (world.any(!refused.empty())) {
    if (!refused.empty()) throw InputError(refused);
    throw InputError(option + " " + dir + ": rank 0 could not take it for this run (its log says why)");
  }
  return lock;
}

}  // namespace fm::dist
