#include "util/preemption.h"

#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <ctime>

namespace fm {
namespace {

// Lock-free atomics and clock_gettime are async-signal-safe; nothing else runs inside the handler.
std::atomic<int> g_signal{0};
std::atomic<int64_t> g_first_ns{0};  // CLOCK_MONOTONIC time of the first signal
static_assert(std::atomic<int>::is_always_lock_free && std::atomic<int64_t>::is_always_lock_free);

int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

extern "C" void on_stop_signal(int sig) {
  int none = 0;
  if (g_signal.compare_exchange_strong(none, sig)) {
    g_first_ns.store(now_ns());
    return;
  }
  if (now_ns() - g_first_ns.load() < static_cast<int64_t>(kStopGraceSeconds * 1e9)) return;
  _exit(128 + sig);
}

}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  // SA_RESTART: a signal arriving inside read()/write() must not turn a checkpoint write into an EINTR failure.
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGTERM, SIGUSR1, SIGINT}) sigaction(sig, &sa, nullptr);
}

void ignore_stop_signals() {
  for (int sig : {SIGTERM, SIGUSR1, SIGINT}) std::signal(sig, SIG_IGN);
}

bool stop_requested() { return g_signal.load(std::memory_order_relaxed) != 0; }
int stop_signal() { return g_signal.load(std::memory_order_relaxed); }
void reset_stop_request() { g_signal.store(0); }

}  // namespace fm
