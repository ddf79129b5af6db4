#pragma once
// An exclusive lock on an output for the life of the run that writes it: flock(2) on a lock file, which the kernel
// releases when the process ends however it ends, so that a kill -9 leaves no stale lock. A second writer of the
// same output (a duplicate job, a requeued job starting while the old one still writes) is refused at once, with the
// holder's pid and host, instead of both running and one silently replacing the other's files.
#include <string>

namespace fm {

class RunLock {
 public:
  // Locks `lock_file` (created with its directories when missing). InputError "WHAT: in use by another fm (pid P on
  // host H since T)" when another process holds it.
  RunLock(const std::string& lock_file, const std::string& what);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  // The lock file of an output directory.
  static std::string in_dir(const std::string& dir) { return dir + "/.fm.lock"; }

 private:
  int fd_ = -1;
};

}  // namespace fm
