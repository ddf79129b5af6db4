#!/usr/bin/env bash
# The whole GPU check in one go, for a GPU machine that has python3 with torch (CUDA), CMake, ninja and nvcc but no
# package registry: build fm against the staged Debian packages (.stage/, made here by third_party/stage_deps.sh and
# carried along), print `fm --version`, run the test suite with FM_TEST_DEVICE=cuda, train the shapes demo on CUDA,
# run the hooks later issues add, and end with one summary table (also written, with the logs, to $OUT or --out).
#
# Usage: bash scripts/gpu_check.sh [--dry-run] [--out DIR] [--tests REGEX]
#   --dry-run     the same steps on the CPU of this machine: a separate build folder against .stage only, a subset of
#                 the tests on cpu (FM_GPU_CHECK_TESTS or --tests overrides it; "" runs all), a 100-step demo
#   --out DIR     where the summary and logs go (default $OUT, else runs/gpu_check or runs/gpu_check_dry)
# Environment: FM_PYTHON (the python whose torch is linked; default python3 on the GPU machine, .venv's in a dry run),
# FM_GPU_CHECK_JOBS (build and test parallelism, default nproc). Exit status 0 when every step passed or was skipped.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)

DRY=0
OUT_DIR=${OUT:-}
TESTS=${FM_GPU_CHECK_TESTS-__default__}
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1 ;;
    --out) OUT_DIR=$2; shift ;;
    --tests) TESTS=$2; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# Hooks of later issues: "name|script[|seconds]". Each runs, when its script exists, as `bash SCRIPT` with FM_BIN, FM_DEVICE,
# FM_DRY_RUN (0/1), FM_HOOK_OUT (a folder for its files) and FM_PYTHON set; exit 0 passes, 77 skips, anything else fails; its
# last line of output goes into the summary, and any NAME.md it writes to FM_HOOK_OUT is copied to the output folder.
# Adding a check is one line here.
HOOKS=(
  "equivalence|scripts/equivalence_check.sh"
  "bench|scripts/bench.sh|200"
  "nccl|scripts/nccl_check.sh"
  "few_step|scripts/few_step_check.sh|150"
)
HOOK_TIMEOUT=${FM_GPU_CHECK_HOOK_TIMEOUT:-120}

if [ "$DRY" = 1 ]; then
  DEVICE=cpu
  BUILD=build-gpu
  PY=${FM_PYTHON:-$ROOT/.venv/bin/python}
  [ "$TESTS" = __default__ ] && TESTS='TestDevice|CudaParity|TrainEquivalence|Cli\.|UNet(Shape|Init|Layout)|Solver\.|Path\.|Sample\.|Reflow\.|Likelihood(Gaussian|ZeroField)|Data(LoadDataset|BatchSampler)|Train\.(Ema|Resume|TinyUNet)|FidCli'
  DEMO_STEPS=100
  TEST_LIMIT=900
  DEMO_LIMIT=600
  OUT_DIR=${OUT_DIR:-$ROOT/runs/gpu_check_dry}
else
  DEVICE=cuda
  BUILD=build-gpu
  PY=${FM_PYTHON:-$(command -v python3)}
  [ "$TESTS" = __default__ ] && TESTS=''
  DEMO_STEPS=0  # the full demo
  # Limits that keep the whole check inside the device tool's 10 minutes per command.
  TEST_LIMIT=240
  DEMO_LIMIT=150
  OUT_DIR=${OUT_DIR:-$ROOT/runs/gpu_check}
fi
JOBS=${FM_GPU_CHECK_JOBS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}  # nproc alone honours OMP_NUM_THREADS
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
# The device tool brings back at most 8 files from $OUT: the summary, the test log and one archive of every log.
LOGS=$(mktemp -d)
WORK=$ROOT/runs/gpu_check_work$([ "$DRY" = 1 ] && echo _dry)
rm -rf "$WORK"
mkdir -p "$WORK"
T_START=$(date +%s)

ROWS=()   # "step|result|seconds|detail"
FAILED=0
row() {
  ROWS+=("$1|$2|$3|$4")
  [ "$2" = FAIL ] && FAILED=1
  publish
}
summary() {
  echo "## fm GPU check ($([ "$DRY" = 1 ] && echo "dry run on the CPU" || echo "device $DEVICE"), $(date -u '+%Y-%m-%d %H:%M UTC'))"
  echo
  echo "| step | result | time | detail |"
  echo "| --- | --- | --- | --- |"
  for r in "${ROWS[@]}"; do
    IFS='|' read -r s res sec det <<<"$r"
    det=${det//|/\\|}  # a '|' (in a test regex, say) would end the cell
    echo "| $s | $res | ${sec} s | $det |"
  done
  echo
  echo "total $(( $(date +%s) - T_START )) s"
}
# Rewrites the summary and the log archive after every step, so that a run cut short still leaves both behind.
publish() {
  summary > "$OUT_DIR/summary.md"
  [ -f "$LOGS/tests.log" ] && cp "$LOGS/tests.log" "$OUT_DIR/tests.log"
  tar -C "$LOGS" -czf "$OUT_DIR/logs.tar.gz" . 2>/dev/null
}
say() { printf '[gpu_check %4ds] %s\n' "$(( $(date +%s) - T_START ))" "$*" >&2; }

# ---- 1. build --------------------------------------------------------------------------------------------------------
say "building into $BUILD against .stage (python: $PY)"
t0=$(date +%s)
build_ok=1
if [ ! -f .stage/MANIFEST ]; then
  row build FAIL 0 ".stage/ is missing: run third_party/stage_deps.sh where apt works, and carry .stage"
  build_ok=0
else
  CMAKE_ARGS=(-S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFM_STAGED_DEPS=.stage -DFM_PYTHON="$PY")
  if [ "$DRY" = 0 ] && NVCC=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null); then
    CMAKE_ARGS+=(-DCUDAToolkit_ROOT="$(dirname "$(dirname "$NVCC")")" -DCMAKE_CUDA_COMPILER="$NVCC")
  fi
  { cmake "${CMAKE_ARGS[@]}" && cmake --build "$BUILD" -j "$JOBS"; } > "$LOGS/build.log" 2>&1 || build_ok=0
  detail="$(grep -c . .stage/MANIFEST) staged packages, $(du -sh .stage | cut -f1)"
  if [ "$build_ok" = 1 ]; then
    # Proof that the staged copies, not the system's, were compiled in: no header of these libraries from /usr.
    leaks=$(ninja -C "$BUILD" -t deps 2>/dev/null |
            grep -E '^ +/usr/include/([^/]+-linux-gnu/)?(spdlog|fmt|nlohmann|CLI|stb|gtest|gmock|gloo|google/protobuf|zlib\.h|zconf\.h|zip\.h|zipconf\.h|xxhash\.h)' |
            sort -u)
    echo "$leaks" > "$LOGS/system_headers_used.txt"
    if [ -n "$leaks" ]; then
      build_ok=0
      detail="$detail; system headers used: $(echo "$leaks" | head -3 | tr '\n' ' ')"
    else
      staged=$(ninja -C "$BUILD" -t deps 2>/dev/null | grep -c "/.stage/usr/include/")
      detail="$detail; $staged header uses from .stage, none of theirs from /usr/include"
    fi
    ldd "$BUILD/fm" > "$LOGS/ldd_fm.txt" 2>&1
    # Every staged library fm loads must load from the stage (through fm's RUNPATH), not from the system: here the
    # system has them all, the GPU machine none, so a library found by chance here would be missing there.
    from_system=""
    for lib in .stage/usr/lib/*/lib*.so.*; do
      name=$(basename "$lib")
      where=$(awk -v n="$name" '$1 == n {print $3}' "$LOGS/ldd_fm.txt")
      case $where in ""|*/.stage/*) ;; *) from_system="$from_system $name" ;; esac
    done
    if grep -q 'not found' "$LOGS/ldd_fm.txt"; then
      build_ok=0
      detail="$detail; unresolved: $(grep 'not found' "$LOGS/ldd_fm.txt" | awk '{print $1}' | tr '\n' ' ')"
    elif [ -n "$from_system" ]; then
      build_ok=0
      detail="$detail; staged libraries loaded from the system:$from_system"
    fi
  else
    detail="$detail; $(grep -m1 -E 'error|Error' "$LOGS/build.log" | cut -c1-160)"
  fi
  row build "$([ "$build_ok" = 1 ] && echo PASS || echo FAIL)" $(( $(date +%s) - t0 )) "$detail"
fi
if [ "$build_ok" = 0 ]; then
  say "build failed: see $OUT_DIR/logs.tar.gz (build.log)"
  summary
  exit 1
fi
FM=$ROOT/$BUILD/fm

# ---- 2. the Python references ---------------------------------------------------------------------------------------
# torchcfm, pytorch-fid and clean-fid, which the reference tests and the benchmark compare with, come as wheels staged
# beside the Debian packages (.stage/wheels) and go into a scratch folder on the Python path.
t0=$(date +%s)
if ls .stage/wheels/*.whl > /dev/null 2>&1; then
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
       .stage/wheels/*.whl > "$LOGS/wheels.log" 2>&1; then
    export PYTHONPATH=$WORK/site${PYTHONPATH:+:$PYTHONPATH}
    found=$("$PY" -c 'import importlib.util as u; print(" ".join(m for m in ("torchcfm", "pytorch_fid", "cleanfid") if u.find_spec(m)))')
    row references PASS $(( $(date +%s) - t0 )) "$(ls .stage/wheels | paste -sd' ' -); importable: $found"
  else
    row references FAIL $(( $(date +%s) - t0 )) "pip install of .stage/wheels failed: $(tail -1 "$LOGS/wheels.log" | cut -c1-160)"
  fi
else
  row references SKIP 0 ".stage/wheels is missing (third_party/stage_deps.sh stages it): reference tests will skip"
fi

# ---- 3. fm --version -------------------------------------------------------------------------------------------------
"$FM" --version > "$LOGS/version.txt" 2>&1
cat "$LOGS/version.txt" >&2
gpus=$(grep -E '^  cuda:' "$LOGS/version.txt" | sed 's/^  //' | paste -sd';' -)
if [ "$DRY" = 0 ] && ! grep -q 'CUDA available: yes' "$LOGS/version.txt"; then
  row version FAIL 0 "fm sees no CUDA device: $(head -c 200 "$LOGS/version.txt" | tr '\n' ' ')"
else
  row version PASS 0 "$(sed -n 2p "$LOGS/version.txt"); ${gpus:-no GPU}"
fi

# ---- 4. the test suite ----------------------------------------------------------------------------------------------
say "tests on $DEVICE${TESTS:+ (subset: $TESTS)}"
t0=$(date +%s)
CTEST_ARGS=(--test-dir "$BUILD" --output-on-failure -j "$JOBS" --timeout 300)
[ -n "$TESTS" ] && CTEST_ARGS+=(-R "$TESTS")
FM_TEST_DEVICE=$DEVICE OMP_NUM_THREADS=1 timeout "$TEST_LIMIT" ctest "${CTEST_ARGS[@]}" > "$LOGS/tests.log" 2>&1
rc=$?
line=$(grep -E 'tests passed, [0-9]+ tests failed out of' "$LOGS/tests.log" | tail -1)
skipped=$(grep -c -- '\*\*\*Skipped' "$LOGS/tests.log")
failed=$(sed -n '/The following tests FAILED/,$p' "$LOGS/tests.log" | grep -E '^\s+[0-9]+ - ' | awk '{print $3}' |
         head -8 | paste -sd' ' -)
row tests "$([ $rc = 0 ] && echo PASS || echo FAIL)" $(( $(date +%s) - t0 )) \
  "${line:-no ctest summary (rc $rc$([ $rc = 124 ] && echo ", stopped after $TEST_LIMIT s"))}; $skipped skipped${failed:+; failed: $failed}${TESTS:+; subset: $TESTS}"

# ---- 5. the shapes demo ---------------------------------------------------------------------------------------------
say "shapes demo on $DEVICE"
t0=$(date +%s)
DEMO_ARGS=(train --config configs/shapes_cpu.json --device "$DEVICE" --out "$WORK/shapes")
[ "$DEMO_STEPS" -gt 0 ] && DEMO_ARGS+=(--set "train.steps=$DEMO_STEPS" train.log_every=25 train.sample_every=0)
timeout "$DEMO_LIMIT" "$FM" "${DEMO_ARGS[@]}" > "$LOGS/demo.log" 2>&1
rc=$?
sec=$(( $(date +%s) - t0 ))
if [ $rc = 0 ] && [ -s "$WORK/shapes/metrics.jsonl" ]; then
  cp "$WORK/shapes/metrics.jsonl" "$LOGS/demo_metrics.jsonl"
  [ -f "$WORK/shapes/samples.png" ] && cp "$WORK/shapes/samples.png" "$LOGS/demo_samples.png"
  stats=$("$PY" - "$WORK/shapes/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rate = sorted(r["samples_per_s"] for r in rows[1:] or rows)  # the first interval includes start-up
print(f'{rows[-1]["step"]} steps, final loss {rows[-1]["loss"]:.3f}, {rate[len(rate) // 2]:.0f} images/s (median), '
      f'peak memory {max(r["peak_mem_mib"] for r in rows):.0f} MiB')
PY
)
  row demo PASS $sec "$stats; CPU (README, 2 cores): 2000 steps in 270 s, loss 0.094, ~240 images/s"
else
  row demo FAIL $sec "fm train exited $rc: $(grep -m1 'error' "$LOGS/demo.log" | cut -c1-160)"
fi

# ---- 6. hooks of later issues ---------------------------------------------------------------------------------------
for h in "${HOOKS[@]}"; do
  name=${h%%|*}
  script=${h#*|}
  limit=$HOOK_TIMEOUT
  if [ "${script#*|}" != "$script" ]; then limit=${script#*|}; script=${script%%|*}; fi
  if [ ! -f "$script" ]; then
    row "$name" SKIP 0 "$script is absent"
    continue
  fi
  say "hook $name: $script"
  t0=$(date +%s)
  mkdir -p "$WORK/$name"
  FM_BIN=$FM FM_DEVICE=$DEVICE FM_DRY_RUN=$DRY FM_HOOK_OUT=$WORK/$name FM_PYTHON=$PY \
    timeout "$limit" bash "$script" > "$LOGS/hook_$name.log" 2>&1
  rc=$?
  [ -f "$WORK/$name/$name.md" ] && cp "$WORK/$name/$name.md" "$OUT_DIR/"
  last=$(grep -v '^\s*$' "$LOGS/hook_$name.log" | tail -1 | cut -c1-200)
  case $rc in
    0) row "$name" PASS $(( $(date +%s) - t0 )) "$last" ;;
    77) row "$name" SKIP $(( $(date +%s) - t0 )) "$last" ;;
    124) row "$name" FAIL $(( $(date +%s) - t0 )) "timed out after $limit s" ;;
    *) row "$name" FAIL $(( $(date +%s) - t0 )) "exit $rc: $last" ;;
  esac
done

# ---- 7. summary -----------------------------------------------------------------------------------------------------
publish
rm -rf "$LOGS"
echo
summary
echo
echo "summary, tests.log and logs.tar.gz (every log) are in $OUT_DIR"
exit $FAILED
