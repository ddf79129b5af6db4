#!/usr/bin/env bash
# Builds the libFuzzer harnesses in fuzz/ (clang, ASan + UBSan, into build-asan: see FM_SANITIZE in scripts/setup.sh)
# and runs each for SECONDS (default 60), one after the other. A harness that crashes, hangs (25 s on one input: the
# sanitizers slow the largest legal images that far down) or runs out of memory fails the script; the input that did
# it is saved as fuzz-out/<harness>/crash-* (or timeout-*,
# oom-*) and replays with: build-asan/fuzz/<harness> fuzz-out/<harness>/crash-...
#
#   scripts/fuzz.sh [SECONDS] [HARNESS ...]       e.g. scripts/fuzz.sh 600 fuzz_npz fuzz_npy
#
# The seed corpus is generated (scripts/make_fuzz_corpus.py, never committed) into fuzz-out/seeds; what each fuzzer
# learns is kept in fuzz-out/corpus/<harness> and reused by the next run. fuzz-out/summary.tsv gets one line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
[ $# -gt 0 ] && shift
BUILD=${FM_ASAN_BUILD:-build-asan}
OUT=fuzz-out
log() { printf '[fuzz] %s\n' "$*" >&2; }

HARNESSES=("$@")
if [ ${#HARNESSES[@]} -eq 0 ]; then
  for f in fuzz/fuzz_*.cpp; do HARNESSES+=("$(basename "$f" .cpp)"); done
fi
if [ ! -f "$BUILD/build.ninja" ]; then
  log "configuring $BUILD (clang, ASan + UBSan, libFuzzer)"
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++ -DFM_FUZZ=ON >/dev/null
fi
log "building ${HARNESSES[*]}"
cmake --build "$BUILD" -j "${FM_JOBS:-$(nproc)}" --target "${HARNESSES[@]}" >/dev/null

# LibTorch allocates caches once and keeps them; LeakSanitizer would count those against the first input.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=1
if [ ! -d "$OUT/seeds" ]; then
  log "writing the seed corpus to $OUT/seeds"
  # The checkpoint seed comes from a two-step run of whichever fm is built (none: that corpus starts empty).
  FM_ARGS=()
  for fm in build/fm "$BUILD/fm"; do [ -x "$fm" ] && FM_ARGS=(--fm "$fm") && break; done
  .venv/bin/python scripts/make_fuzz_corpus.py "$OUT/seeds" "${FM_ARGS[@]}" >&2
fi

failed=()
for h in "${HARNESSES[@]}"; do
  mkdir -p "$OUT/corpus/$h" "$OUT/$h" "$OUT/seeds/$h"
  # Inputs up to 64 KiB: enough for every format's header paths, small enough to run thousands per second.
  logf="$OUT/$h/last.log"
  set +e
  t0=$(date +%s)
  "$BUILD/fuzz/$h" "$OUT/corpus/$h" "$OUT/seeds/$h" -max_total_time="$SECS" -timeout=25 -rss_limit_mb=4096 \
    -max_len=65536 -artifact_prefix="$OUT/$h/" -print_final_stats=1 >"$logf" 2>&1
  rc=$?
  secs=$(( $(date +%s) - t0 ))
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logf" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logf" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$logf" | tail -1 | cut -d' ' -f2)
  printf '%s\t%s\t%ss\t%s execs\t%s/s\tcov %s\trc %s\n' "$(date -u +%FT%TZ)" "$h" "$secs" "${runs:-?}" "${rate:-?}" \
    "${cov:-?}" "$rc" >>"$OUT/summary.tsv"
  if [ $rc -ne 0 ]; then
    log "$h: FAILED (exit $rc) after ${runs:-?} runs; see $logf and $OUT/$h/"
    grep -E 'ERROR|runtime error|fm fuzz|SUMMARY|Test unit written' "$logf" | head -8 >&2 || true
    failed+=("$h")
  else
    log "$h: ${runs:-?} runs in ${secs}s (${rate:-?}/s), coverage ${cov:-?}"
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  log "failed: ${failed[*]}"
  exit 1
fi
