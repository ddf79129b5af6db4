#!/usr/bin/env bash
# Runs the whole test suite (unit tests and the Python reference tests) against the build made by scripts/setup.sh.
# Extra arguments go to ctest, e.g.: scripts/test.sh -R Solver
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --build build -j "$(nproc)" >/dev/null
# Each test process uses one intra-op thread and ctest runs one per core: torch threads spinning on shared cores
# slow everything down many times over.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec ctest --test-dir build --output-on-failure -j "$(nproc)" "$@"
