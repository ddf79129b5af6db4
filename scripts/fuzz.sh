#!/usr/bin/env bash
# Builds the libFuzzer harnesses in fuzz/ (clang, ASan + UBSan, into build-asan: see FM_SANITIZE in scripts/setup.sh)
# and runs each for SECONDS (default 60), one after the other. A harness that crashes, hangs (25 s on one input: the
# sanitizers slow the largest legal images that far down) or runs out of memory fails the script; the input that did
# it is saved as fuzz-out/<harness>/crash-* (or timeout-*,
# oom-*) and replays with: build-asan/fuzz/<harness> fuzz-out/<harness>/crash-...
#
#   scripts/fuzz.sh [SECONDS] [HARNESS ...]       e.g. scripts/fuzz.sh 600 fuzz_npz fuzz_npy
#   scripts/fuzz.sh --build-only [HARNESS ...]    build the harnesses and write the seed corpus, run nothing
#
# FM_JOBS harnesses run at once (default: one per core), each on one thread. FM_PYTHON: the Python whose torch wheel
# provides LibTorch and writes the seeds (default .venv/bin/python).
# The seed corpus is generated (scripts/make_fuzz_corpus.py, never committed) into fuzz-out/seeds; what each fuzzer
# learns is kept in fuzz-out/corpus/<harness> and reused by the next run. fuzz-out/summary.tsv gets one line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_ONLY=0
SECS=60
if [ "${1:-}" = --build-only ]; then
  BUILD_ONLY=1
  shift
elif [ $# -gt 0 ]; then
  SECS=$1
  shift
fi
PY=${FM_PYTHON:-.venv/bin/python}
JOBS=${FM_JOBS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}  # nproc alone honours OMP_NUM_THREADS
BUILD=${FM_ASAN_BUILD:-build-asan}
OUT=fuzz-out
log() { printf '[fuzz] %s\n' "$*" >&2; }

HARNESSES=("$@")
if [ ${#HARNESSES[@]} -eq 0 ]; then
  for f in fuzz/fuzz_*.cpp; do HARNESSES+=("$(basename "$f" .cpp)"); done
fi
mkdir -p "$OUT"
# Configure and build output goes to a log, shown when a step fails (LibTorch's CMake warns on every configure).
quiet() { "$@" >"$OUT/build.log" 2>&1 || { tail -n 40 "$OUT/build.log" >&2; log "failed: $*"; exit 1; }; }
if [ ! -f "$BUILD/build.ninja" ]; then
  log "configuring $BUILD (clang, ASan + UBSan, libFuzzer)"
  PY_ARGS=()
  [ -n "${FM_PYTHON:-}" ] && PY_ARGS=(-DFM_PYTHON="$FM_PYTHON")
  quiet cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++ -DFM_FUZZ=ON \
    "${PY_ARGS[@]}"
fi
log "building ${HARNESSES[*]}"
quiet cmake --build "$BUILD" -j "$JOBS" --target "${HARNESSES[@]}"

# LibTorch allocates caches once and keeps them; LeakSanitizer would count those against the first input.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=1
missing_seeds=0
for h in "${HARNESSES[@]}"; do [ -d "$OUT/seeds/$h" ] || missing_seeds=1; done
[ scripts/make_fuzz_corpus.py -nt "$OUT/seeds" ] && missing_seeds=1  # the generator changed since
if [ "$missing_seeds" = 1 ]; then
  log "writing the seed corpus to $OUT/seeds"
  # The checkpoint seed comes from a two-step run of whichever fm is built (none: that corpus starts empty).
  FM_ARGS=()
  for fm in build/fm "$BUILD/fm"; do [ -x "$fm" ] && FM_ARGS=(--fm "$fm") && break; done
  "$PY" scripts/make_fuzz_corpus.py "$OUT/seeds" "${FM_ARGS[@]}" >&2
  touch "$OUT/seeds"
fi

[ "$BUILD_ONLY" = 1 ] && exit 0

# The largest input a harness is given. 64 KiB covers every format's header paths and runs thousands of inputs per
# second. The readers of other tools' files get 1 MiB: what breaks them is structure built from many small records
# (a pickle nested 10^5 levels deep, a storage id referenced 10^4 times), which their seeds hold and 64 KiB cuts off.
max_len() {
  case $1 in
    fuzz_torch_file | fuzz_safetensors) echo 1048576 ;;
    *) echo 65536 ;;
  esac
}

# One harness: its run, a line in the summary, and its verdict as the exit status.
fuzz_one() {
  local h=$1 logf t0 rc secs runs rate cov
  mkdir -p "$OUT/corpus/$h" "$OUT/$h" "$OUT/seeds/$h"
  logf="$OUT/$h/last.log"
  t0=$(date +%s)
  rc=0
  "$BUILD/fuzz/$h" "$OUT/corpus/$h" "$OUT/seeds/$h" -max_total_time="$SECS" -timeout=25 -rss_limit_mb=4096 \
    -max_len="$(max_len "$h")" -artifact_prefix="$OUT/$h/" -print_final_stats=1 >"$logf" 2>&1 || rc=$?
  secs=$(( $(date +%s) - t0 ))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logf" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logf" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$logf" | tail -1 | cut -d' ' -f2)
  printf '%s\t%s\t%ss\t%s execs\t%s/s\tcov %s\trc %s\n' "$(date -u +%FT%TZ)" "$h" "$secs" "${runs:-?}" "${rate:-?}" \
    "${cov:-?}" "$rc" >>"$OUT/summary.tsv"
  if [ $rc -ne 0 ]; then
    log "$h: FAILED (exit $rc) after ${runs:-?} runs; see $logf and $OUT/$h/"
    grep -E 'ERROR|runtime error|fm fuzz|SUMMARY|Test unit written' "$logf" | head -8 >&2 || true
    return 1
  fi
  log "$h: ${runs:-?} runs in ${secs}s (${rate:-?}/s), coverage ${cov:-?}"
}

declare -A pid_of
failed=()
for h in "${HARNESSES[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  fuzz_one "$h" &
  pid_of[$h]=$!
done
for h in "${HARNESSES[@]}"; do wait "${pid_of[$h]}" || failed+=("$h"); done
if [ ${#failed[@]} -gt 0 ]; then
  log "failed: ${failed[*]}"
  exit 1
fi
