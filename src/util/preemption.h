#pragma once
// Preemption: batch schedulers (SLURM, Kubernetes, torchrun's agent) send SIGTERM or SIGUSR1 some seconds before they
// kill a job, and a person presses Ctrl-C (SIGINT). The handler only records the signal; long loops (training steps,
// sample batches, likelihood and feature batches) poll stop_requested() between units of work, save what they have,
// and the CLI exits with kExitResumable. Further stop signals within kStopGraceSeconds of the first are ignored: a
// launcher follows the signal it forwards with its own (Ctrl-C under torchrun reaches a worker as the terminal's SIGINT
// and then the agent's SIGTERM), and the stop must still save. A repeat after the grace period ends the process at
// once (exit 128 + signal, the shell's convention).
#include <csignal>

namespace fm {

// EX_TEMPFAIL from <sysexits.h>: "stopped early on request, state saved; run again with --resume".
inline constexpr int kExitResumable = 75;

// How long a stop under way ignores further stop signals.
inline constexpr double kStopGraceSeconds = 5.0;

// Installs the handler for SIGTERM, SIGUSR1 and SIGINT (idempotent).
void install_stop_handlers();
// True once one of those signals has arrived.
bool stop_requested();
// The signal that asked to stop (0 if none).
int stop_signal();
// Once the state is saved and the process is on its way out with kExitResumable: later stop signals are ignored, so
// that a launcher's follow-up SIGTERM (torchrun sends one to every worker as soon as one has exited) cannot turn the
// exit 75 into 143.
void ignore_stop_signals();
// For tests: forget a recorded signal.
void reset_stop_request();

// Thrown by a loop that stopped on request after saving its state; the CLI maps it to kExitResumable.
struct StopRequested {
  int signal = 0;
  bool state_saved = true;  // false: the command keeps no partial state (eval-nll); a rerun starts over
};

}  // namespace fm
