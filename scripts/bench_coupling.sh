#!/usr/bin/env bash
# Cost of the noise-data coupling per training step: `fm train` on a config for a few hundred steps with each
# coupling at batch 128, 256 and 512, reporting the steady-state step time (from metrics.jsonl, first interval
# dropped). The coupling's own cost is the difference to `independent`.
# Usage: scripts/bench_coupling.sh [CONFIG] [STEPS]   (default configs/toy2d.json, 300 steps; CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/toy2d.json}
steps=${2:-300}
fm=./build/fm
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf "%-12s %6s %12s\n" coupling batch ms/step
for b in 128 256 512; do
  for c in independent ot sinkhorn; do
    dir="$out/$c-$b"
    "$fm" train --config "$config" --out "$dir" --set device=cpu --set path.coupling="$c" --set train.batch_size="$b" \
      --set train.steps="$steps" --set train.log_every=$((steps / 3)) --set train.ckpt_every="$steps" \
      --set sample.n=16 --set sample.steps=2 >/dev/null 2>&1
    ms=$(tail -n 2 "$dir/metrics.jsonl" | python3 -c 'import json,sys; v=[json.loads(l)["steps_per_s"] for l in sys.stdin]; print("%.2f" % (sum(1000 / x for x in v) / len(v)))')
    printf "%-12s %6s %12s\n" "$c" "$b" "$ms"
  done
done
