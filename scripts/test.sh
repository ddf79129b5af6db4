#!/usr/bin/env bash
# Runs the whole test suite (unit tests and the Python reference tests) against the build made by scripts/setup.sh.
# Extra arguments go to ctest, e.g.: scripts/test.sh -R Solver
#
# Environment:
#   FM_BUILD_DIR=build-asan   run the suite in the sanitizer build (FM_SANITIZE=1 bash scripts/setup.sh) instead
#   FM_FUZZ_SECONDS=5         seconds per libFuzzer harness after the unit tests (0: none), run by scripts/fuzz.sh on
#                             the harnesses scripts/setup.sh built into build-asan/
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${FM_BUILD_DIR:-build}
# The cores, counted before OMP_NUM_THREADS=1 is exported below: GNU nproc honours OMP_NUM_THREADS, and counting after
# it ran the suite one test at a time.
CORES=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
cmake --build "$BUILD" -j "$CORES" >/dev/null
# Each test process uses one intra-op thread and ctest runs one per core: torch threads spinning on shared cores
# slow everything down many times over.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ "$BUILD" = build-asan ]; then
  # LibTorch keeps caches for the life of the process, which LeakSanitizer would report at exit.
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi
ctest --test-dir "$BUILD" --output-on-failure -j "$CORES" "$@"
# A few seconds per reader harness: enough to replay the corpus and catch a reader that regressed. Not after a
# selection of tests (extra arguments), which is for quick iteration.
if [ "${FM_FUZZ_SECONDS:-5}" != 0 ] && [ $# -eq 0 ]; then
  # fuzz_checkpoint too: checkpoints are verified (XXH3 trailer) before LibTorch parses them, so the unpickler's
  # allocation from a corrupt length field, which this harness found before the checksum existed, is out of reach.
  bash scripts/fuzz.sh "${FM_FUZZ_SECONDS:-5}"
fi
