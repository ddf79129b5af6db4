#!/usr/bin/env bash
# scripts/gpu_check.sh hook "few_step": reflow and SDE sampling end to end on the device, through the fm binary.
# 1. A short run of the 2-D demo on FM_DEVICE, then `fm reflow` of its flow by the SDE sampler (euler_maruyama) on
#    FM_DEVICE and on the CPU: every pair's noise is drawn per item on the CPU, so x0 must be the same on both and x1
#    agree to rounding (the SDE noise of each step is drawn the same way).
# 2. The pairs coupling trained on the device's pairs (U-shaped times, pseudo-Huber, initialised from the demo's flow),
#    then sampled in one Euler step with the toy metrics of samples.json.
# Environment (set by gpu_check.sh): FM_BIN, FM_DEVICE (cuda; cpu in a dry run), FM_DRY_RUN (0/1), FM_HOOK_OUT,
# FM_PYTHON (with numpy, for the comparison). Exit 0 pass, 77 skip, else fail.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
FM=${FM_BIN:-build/fm}
DEVICE=${FM_DEVICE:-cuda}
OUT=${FM_HOOK_OUT:-runs/few_step_check}
PY=${FM_PYTHON:-python3}
STEPS=$([ "${FM_DRY_RUN:-0}" = 1 ] && echo 100 || echo 400)
rm -rf "$OUT"
mkdir -p "$OUT"
fail() { echo "few_step: $*"; exit 1; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

"$FM" train --config configs/toy2d.json --device "$DEVICE" --out "$OUT/base" \
  --set "train.steps=$STEPS" train.log_every=50 train.ckpt_every=1000 sample.n=500 > "$OUT/base.log" 2>&1 ||
  fail "training the demo failed (base.log)"
BASE=$(ls "$OUT"/base/checkpoints/ckpt_*.pt | tail -1)
# pairs_device on FM_DEVICE (the CPU too in a dry run), pairs_cpu on the CPU.
for where in device cpu; do
  dev=$([ $where = device ] && echo "$DEVICE" || echo cpu)
  "$FM" reflow --checkpoint "$BASE" --device "$dev" --num-pairs 2000 --batch 500 --solver euler_maruyama \
    --steps 8 --seed 5 --out "$OUT/pairs_$where" > "$OUT/reflow_$where.log" 2>&1 ||
    fail "fm reflow on $dev failed (reflow_$where.log)"
done
cmp_line=$("$PY" - "$OUT/pairs_device/pairs.npz" "$OUT/pairs_cpu/pairs.npz" <<'EOF' 2>&1
import sys
import numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
same_x0 = np.array_equal(a["x0"], b["x0"])
rel = float(np.abs(a["x1"] - b["x1"]).max() / np.abs(b["x1"]).max())
print(f"x0 {'equal' if same_x0 else 'DIFFER'}, x1 max rel diff {rel:.2e}")
sys.exit(0 if same_x0 and rel < 1e-4 else 1)
EOF
) || fail "pairs on $DEVICE against the CPU's: $cmp_line"

"$FM" train --config configs/toy2d_reflow.json --device "$DEVICE" --out "$OUT/rectified" \
  --set "data.path=$OUT/pairs_device" "train.init_from=$BASE" "train.steps=$STEPS" train.log_every=50 \
  train.ckpt_every=1000 sample.n=500 > "$OUT/rectified.log" 2>&1 || fail "training on the pairs failed (rectified.log)"
RECT=$(ls "$OUT"/rectified/checkpoints/ckpt_*.pt | tail -1)
"$FM" sample --checkpoint "$RECT" --device "$DEVICE" -n 2000 --solver euler --steps 1 \
  --toy-reference toy:checkerboard --out "$OUT/one_step" > "$OUT/sample.log" 2>&1 || fail "sampling failed (sample.log)"
board=$("$PY" -c "import json,sys; m=json.load(open(sys.argv[1]))['toy_metrics']; \
print(f\"on board {m['on_checkerboard']:.3f}, SW2 {m['sliced_wasserstein']:.3f}\")" "$OUT/one_step/samples.json") ||
  fail "no toy_metrics in one_step/samples.json"
echo "reflow on $DEVICE vs cpu: $cmp_line; 2-rectified after $STEPS steps, 1 NFE: $board"
