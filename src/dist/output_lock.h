#pragma once
// The lock of a job's output directory (io/run_lock.h), held by rank 0 for the whole run; every rank learns whether
// it was taken, so that a refused job ends on every rank at once rather than leaving the others waiting for rank 0.
#include <memory>
#include <string>

#include "dist/world.h"
#include "io/run_lock.h"

namespace fm::dist {

// Rank 0 makes `dir` ready as the output of `option` (io/file_util.h, prepare_output_dir) and locks it; returns the
// lock there, nullptr on the other ranks. InputError on every rank when rank 0 cannot.
std::unique_ptr<RunLock> lock_output_dir(World& world, const std::string& dir, const std::string& option);

}  // namespace fm::dist
