#pragma once
// Multi-process tests: the venv's real torchrun starts the ranks on loopback (Gloo), exactly as a user would.
// A worker is a test of this same binary that does nothing unless FM_DIST_WORKER names it; the driver test launches
// torchrun on `fm_tests --gtest_filter=<worker>` and checks every rank's exit and output.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "test_util.h"

namespace fm::test {

inline std::string torchrun_exe() {
  auto py = python();
  return py.substr(0, py.rfind('/') + 1) + "torchrun";
}

// This test binary's own path (for torchrun to start it as the worker).
inline std::string self_exe() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}

// A TCP port nothing listens on now (bound on 127.0.0.1, read, released).
inline int free_loopback_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

// Is this process the worker `name` started by a driver test?
inline bool is_worker(const std::string& name) {
  const char* w = std::getenv("FM_DIST_WORKER");
  return w && name == w;
}

// `torchrun --no-python --standalone --nproc-per-node N <command>` with `env` (VAR=value ...) in front; output of all
// ranks and of torchrun together. --standalone picks a free port, so tests may run side by side.
inline RunResult torchrun(int nproc, const std::string& command, const std::string& env = "") {
  return run(env + " OMP_NUM_THREADS=1 " + torchrun_exe() + " --no-python --standalone --nproc-per-node " +
             std::to_string(nproc) + " " + command);
}

// torchrun on a worker test of this binary.
inline RunResult torchrun_worker(int nproc, const std::string& worker, const std::string& env = "") {
  return torchrun(nproc, self_exe() + " --gtest_filter=" + worker, env + " FM_DIST_WORKER=" + worker);
}

}  // namespace fm::test
