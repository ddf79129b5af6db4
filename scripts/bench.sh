#!/usr/bin/env bash
# fm against PyTorch on the same network, batch, data and device, in one invocation: `fm bench` and
# scripts/bench_ref.py (torchcfm's U-Net with the same CFM loss, fused AdamW and EMA; bf16 autocast, channels-last and
# cuDNN autotuning on CUDA), eager and under torch.compile, runs alternating, each after a warm-up. One JSON line per
# measurement (with the 1-minute load average beside it) goes to OUT/bench.jsonl, then a Markdown table with the
# ratios fm / reference to OUT/bench.md and stdout.
#
# Usage: bash scripts/bench.sh [--device cpu|cuda] [--out DIR] [--repeats N] [--quick] [--no-compile]
#   cpu:  configs/cifar10_cpu_smoke.json at batch 32 (training), euler 100 steps and dopri5 1e-5 over 16 images,
#         eval-nll's likelihood (dopri5 1e-5, Hutchinson) of 4 images
#   cuda: configs/cifar10_torchcfm.json at batch 128 and configs/cifar10.json (the paper's) at batch 256, both with
#         bf16 autocast; sampling 256 images and the likelihood of 64 with torchcfm's network
#   --quick  one round of 20 steps, torch.compile for torchcfm's network's training only (the gpu_check hook, about
#            2-3 minutes on an H200, unmeasured); FM_DRY_RUN=1 runs a tiny CPU version without torch.compile
# MFU uses the device's stated peak: FM_BENCH_PEAK_TFLOPS, else H200 989 TFLOP/s (dense bf16, NVIDIA's data sheet),
# else on the CPU cores x clock x 32 FP32 FLOPs per cycle (AVX2, two 256-bit FMA units).
# Environment (as scripts/gpu_check.sh sets it for its hooks): FM_BIN, FM_DEVICE, FM_DRY_RUN, FM_HOOK_OUT; FM_PYTHON;
# FM_BENCH_STEPS (timed CPU steps, default 20). Both sides use OMP_NUM_THREADS threads: on a CPU shared with other
# work, OMP_NUM_THREADS=1 gives steadier figures (two threads that must meet at every op wait for each other).
# Exit status 0, or 77 (skipped) for cuda without a GPU or a python without torchcfm (the reference's U-Net).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
FM=${FM_BIN:-$ROOT/build/fm}
PY=${FM_PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
DEVICE=${FM_DEVICE:-cpu}
OUT=${FM_HOOK_OUT:-$ROOT/runs/bench}
REPEATS=3
QUICK=0
COMPILE=1
# The dry run checks the plumbing on the CPU: no torch.compile (its first compile of a training step takes minutes).
[ "${FM_DRY_RUN:-0}" = 1 ] && QUICK=1 && COMPILE=0
[ -n "${FM_HOOK_OUT:-}" ] && QUICK=1  # as scripts/gpu_check.sh's hook: inside its time limit
while [ $# -gt 0 ]; do
  case $1 in
    --device) DEVICE=$2; shift ;;
    --out) OUT=$2; shift ;;
    --repeats) REPEATS=$2; shift ;;
    --quick) QUICK=1 ;;
    --no-compile) COMPILE=0 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case $DEVICE in cuda*) ;; cpu) ;; *) echo "bench.sh: --device must be cpu or cuda" >&2; exit 2 ;; esac
if [ "$DEVICE" != cpu ] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "bench: skipped, no CUDA device visible to $PY"
  exit 77
fi
[ -x "$FM" ] || { echo "bench.sh: $FM is not built (bash scripts/setup.sh)" >&2; exit 2; }
mkdir -p "$OUT"
RESULTS=$OUT/bench.jsonl
: > "$RESULTS"

if [ -n "${FM_BENCH_PEAK_TFLOPS:-}" ]; then
  PEAK=$FM_BENCH_PEAK_TFLOPS
  PEAK_NOTE="$PEAK TFLOP/s (FM_BENCH_PEAK_TFLOPS)"
elif [ "$DEVICE" = cpu ]; then
  MHZ=$(awk -F: '/^cpu MHz/ {gsub(/ /, "", $2); print $2; exit}' /proc/cpuinfo)
  PEAK=$(awk -v n="$(nproc)" -v m="$MHZ" 'BEGIN {printf "%.4f", n * m * 1e6 * 32 / 1e12}')
  PEAK_NOTE="$PEAK TFLOP/s ($(nproc) core(s) used x $MHZ MHz x 32 FP32 FLOPs/cycle, AVX2 FMA)"
else
  NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
  case $NAME in
    *H200*) PEAK=989; PEAK_NOTE="989 TFLOP/s ($NAME, dense bf16)" ;;
    *H100*) PEAK=989; PEAK_NOTE="989 TFLOP/s ($NAME, dense bf16, SXM)" ;;
    *) PEAK=""; PEAK_NOTE="unknown for '$NAME': set FM_BENCH_PEAK_TFLOPS for MFU" ;;
  esac
fi
PEAK_ARG=()
[ -n "$PEAK" ] && PEAK_ARG=(--peak-tflops "$PEAK")

# Tags every JSON line with its configuration and the load average when it finished, then appends it to RESULTS.
record() {
  local label=$1 load
  while IFS= read -r line; do
    case $line in
      \{*) load=$(cut -d' ' -f1 /proc/loadavg)
           echo "{\"label\":\"$label\",\"load\":$load,${line#\{}" | tee -a "$RESULTS" ;;
      *) echo "$line" >&2 ;;
    esac
  done
}

# bench CONFIG LABEL BATCH STEPS SAMPLE_BATCH NLL_BATCH [--set ...]
bench() {
  local config=$1 label=$2 batch=$3 steps=$4 sbatch=$5 nbatch=$6
  shift 6
  local cfg=$OUT/$label.config.json w=$OUT/$label.weights.npz in=$OUT/$label.inputs.npz
  "$FM" config --config "$config" --set device="$DEVICE" "$@" > "$cfg"
  local warm=5 euler=100
  [ "${FM_DRY_RUN:-0}" = 1 ] && warm=2  # (on CUDA the graph is captured at the fourth step: keep 5 there)
  local shape=(--shape 3 32 32)
  local modes=(eager) compile=$COMPILE
  # The quick GPU run compiles one network only: each torch.compile of a training step costs a minute or more.
  [ "$QUICK" = 1 ] && [ "$DEVICE" != cpu ] && [ "$label" != torchcfm_b128 ] && compile=0
  [ "$compile" = 1 ] && modes+=(compile)
  local solve=(--sample-batch "$sbatch" --nll-batch "$nbatch" --euler-steps "$euler" --tol 1e-5)
  echo "== $label: training at batch $batch, $steps steps after $warm, $REPEATS rounds (fm, then ${modes[*]})" >&2
  for _ in $(seq "$REPEATS"); do
    "$FM" bench --config "$cfg" --what train --batch "$batch" --warmup "$warm" --steps "$steps" "${shape[@]}" \
      "${PEAK_ARG[@]}" | record "$label"
    # On CUDA also the captured step (train.cuda_graph), which needs warm-up steps before its capture.
    if [ "$DEVICE" != cpu ]; then
      "$FM" bench --config "$cfg" --set train.cuda_graph=true --what train --batch "$batch" --warmup "$warm" \
        --steps "$steps" "${shape[@]}" "${PEAK_ARG[@]}" | record "$label"
    fi
    for m in "${modes[@]}"; do
      "$PY" scripts/bench_ref.py run --config-json "$cfg" --device "$DEVICE" --mode "$m" --what train \
        --batch "$batch" --warmup "$warm" --steps "$steps" "${shape[@]}" "${PEAK_ARG[@]}" | record "$label"
    done
  done
  [ "$sbatch" = 0 ] && return 0
  echo "== $label: euler $euler steps and dopri5 over $sbatch images, likelihood of $nbatch" >&2
  # The reference draws the network (perturbed from its initialisation so that the field is not zero) and the
  # problems, and writes both for fm: the same ODEs on both sides.
  "$PY" scripts/bench_ref.py run --config-json "$cfg" --device "$DEVICE" --mode eager --what euler,dopri5,nll \
    "${shape[@]}" "${solve[@]}" --write-weights "$w" --write-inputs "$in" | record "$label"
  "$FM" bench --config "$cfg" --what euler,dopri5,nll --weights "$w" --inputs "$in" "${shape[@]}" "${solve[@]}" \
    | record "$label"
  # On CUDA also the samplers with the network replayed as a CUDA graph (sample.cuda_graph).
  if [ "$DEVICE" != cpu ]; then
    "$FM" bench --config "$cfg" --set sample.cuda_graph=true --what euler,dopri5 --weights "$w" --inputs "$in" \
      "${shape[@]}" "${solve[@]}" | record "$label"
  fi
  if [ "$COMPILE" = 1 ] && { [ "$QUICK" = 0 ] || [ "$DEVICE" = cpu ]; }; then
    "$PY" scripts/bench_ref.py run --config-json "$cfg" --device "$DEVICE" --mode compile --what euler,dopri5,nll \
      "${shape[@]}" "${solve[@]}" | record "$label"
  fi
}

T0=$(date +%s)
if [ "$DEVICE" = cpu ]; then
  if [ "${FM_DRY_RUN:-0}" = 1 ]; then
    REPEATS=1
    bench configs/cifar10_cpu_smoke.json smoke_b8 8 3 4 2 --set train.batch_size=8
  else
    [ "$QUICK" = 1 ] && REPEATS=1
    bench configs/cifar10_cpu_smoke.json smoke_b32 32 "$([ "$QUICK" = 1 ] && echo 5 || echo "${FM_BENCH_STEPS:-20}")" 16 4
  fi
else
  [ "$QUICK" = 1 ] && REPEATS=1
  STEPS=$([ "$QUICK" = 1 ] && echo 20 || echo 50)
  bench configs/cifar10_torchcfm.json torchcfm_b128 128 "$STEPS" 256 64 --set train.bf16=true
  bench configs/cifar10.json paper_b256 256 "$STEPS" 0 0 --set train.bf16=true
fi

{
  echo "fm bench against PyTorch $("$PY" -c 'import torch; print(torch.__version__)') on $DEVICE" \
       "($(if [ "$DEVICE" = cpu ]; then lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2}'; \
           else nvidia-smi --query-gpu=name --format=csv,noheader | head -1; fi)," \
       "$("$PY" -c 'import torch; print(torch.get_num_threads())') threads), $(date -u '+%Y-%m-%d %H:%M UTC');" \
       "peak for MFU: $PEAK_NOTE; medians over rounds."
  echo
  "$PY" scripts/bench_ref.py table "$RESULTS"
} > "$OUT/bench.md"
cat "$OUT/bench.md"
"$PY" - "$RESULTS" "$(( $(date +%s) - T0 ))" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(impl, what):
    v = sorted(r["images_per_s"] for r in rows if r["impl"] == impl and r["what"] == what and "images_per_s" in r)
    return v[len(v) // 2] if v else None
parts = []
for what in ("train", "euler"):
    f, e, c = med("fm", what), med("torch_eager", what), med("torch_compile", what)
    if f and e:
        parts.append(f"{what} fm/eager {f / e:.2f}x" + (f", fm/compile {f / c:.2f}x" if c else ""))
print("bench: " + "; ".join(parts) + f" ({sys.argv[2]} s, table in bench.md)")
EOF
