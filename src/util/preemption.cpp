#include "util/preemption.h"

#include <unistd.h>

#include <atomic>

namespace fm {
namespace {

// Lock-free atomics are async-signal-safe; nothing else runs inside the handler.
std::atomic<int> g_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);

extern "C" void on_stop_signal(int sig) {
  if (g_signal.exchange(sig) != 0) _exit(128 + sig);
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
