#!/usr/bin/env bash
# Runs the whole test suite (unit tests and the Python reference tests) against the build made by scripts/setup.sh.
# Extra arguments go to ctest, e.g.: scripts/test.sh -R Solver
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --build build -j "$(nproc)" >/dev/null
exec ctest --test-dir build --output-on-failure -j "$(nproc)" "$@"
