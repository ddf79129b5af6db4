#pragma once
// Stopping on a signal together. A batch scheduler or a person signals one process or all (util/preemption.h); the
// ranks of a job must stop after the same unit of work, each with its share saved, or the job's state on disk would
// be a mix of two points. Every rank calls agree_to_stop at the same point of its loop (a collective), and on a stop
// saves what it has and calls leave_on_stop.
#include "dist/world.h"

namespace fm::dist {

// 0 when no rank has been asked to stop; otherwise the signal that asked (the largest over the ranks, so every rank
// reports the same one). One collective per call, a second only on a stop.
int agree_to_stop(World& world);

// Ends a stop every rank agreed on, once this rank's state is saved: waits until every rank is there (torchrun ends
// the other workers as soon as one exits, so none leaves before the others have saved), ignores further stop signals
// (a launcher follows its first signal with SIGTERM to every worker, which must not turn the exit 75 into 143), and
// throws StopRequested{signal, state_saved}, which the CLI maps to exit 75.
[[noreturn]] void leave_on_stop(World& world, int signal, bool state_saved);

}  // namespace fm::dist
