#!/usr/bin/env bash
# scripts/gpu_check.sh hook "nccl": the shapes demo, shortened, trained under torchrun with one process. A launched job
# is a process group even of one, so this builds the NCCL communicator on cuda:LOCAL_RANK, averages every step's
# gradients through it from autograd's hooks and agrees on the stop flag over it: the multi-GPU path on one GPU.
# Environment (set by gpu_check.sh): FM_BIN, FM_DEVICE (cuda; cpu in a dry run, which then goes through Gloo),
# FM_HOOK_OUT, FM_PYTHON (the python whose torchrun to use; default python3). Exit 0 pass, 77 skip, else fail.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
FM=${FM_BIN:-build/fm}
DEVICE=${FM_DEVICE:-cuda}
OUT=${FM_HOOK_OUT:-runs/nccl_check}
PY=${FM_PYTHON:-python3}
TORCHRUN=""
if py_path=$(command -v "$PY" 2>/dev/null) && [ -x "$(dirname "$py_path")/torchrun" ]; then
  TORCHRUN=$(dirname "$py_path")/torchrun
elif command -v torchrun >/dev/null 2>&1; then
  TORCHRUN=$(command -v torchrun)
fi
if [ -z "$TORCHRUN" ]; then
  echo "skipped: no torchrun beside $PY or on PATH (the torch wheel installs it)"
  exit 77
fi
BACKEND=$([ "${DEVICE%%:*}" = cuda ] && echo NCCL || echo Gloo)
rm -rf "$OUT/run"
mkdir -p "$OUT"
t0=$(date +%s)
OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} "$TORCHRUN" --no-python --standalone --nproc-per-node 1 \
  "$FM" train --config configs/shapes_cpu.json --device "$DEVICE" --out "$OUT/run" \
  --set train.steps=200 train.log_every=50 train.sample_every=0 dist.timeout_s=60 > "$OUT/torchrun.log" 2>&1
rc=$?
tail -5 "$OUT/torchrun.log"
if [ $rc != 0 ] || [ ! -s "$OUT/run/metrics.jsonl" ]; then
  echo "torchrun fm train ($BACKEND, 1 process) exited $rc: $(grep -m1 -i 'error' "$OUT/torchrun.log" | cut -c1-150)"
  exit 1
fi
last=$(tail -1 "$OUT/run/metrics.jsonl")
"$PY" - "$last" "$BACKEND" "$(( $(date +%s) - t0 ))" <<'PY'
import json, sys
m = json.loads(sys.argv[1])
print(f"{sys.argv[2]} world size {m['world_size']}: {m['step']} steps under torchrun in {sys.argv[3]} s, "
      f"loss {m['loss']:.3f}, {m['samples_per_s']:.0f} images/s")
PY
