#include "dist/single_process_world.h"

namespace fm::dist {

World& this_process_only() {
  static SingleProcessWorld alone;
  return alone;
}

}  // namespace fm::dist
