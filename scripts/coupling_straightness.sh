#!/usr/bin/env bash
# Independent against OT coupling on the same recipe, seed and steps: dopri5 NFE at atol = rtol = 1e-5 and the
# straightness of the sampled trajectories (fm sample --straightness), for the README's table.
# Usage: scripts/coupling_straightness.sh [CONFIG] [OUT] [extra --set overrides...]
#   default configs/toy2d.json into runs/coupling; e.g. ... configs/toy2d.json runs/c train.steps=4000
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/toy2d.json}
out=${2:-runs/coupling}
shift $(( $# > 2 ? 2 : $# ))
sets=()
for kv in "$@"; do sets+=(--set "$kv"); done
for c in independent ot; do
  ./build/fm train --config "$config" --out "$out/$c" --set path.coupling="$c" "${sets[@]}"
  ckpt=$(ls "$out/$c"/checkpoints/*.pt | tail -n 1)
  ./build/fm sample --checkpoint "$ckpt" --num-samples 10000 --batch 10000 --solver dopri5 --atol 1e-5 --rtol 1e-5 \
    --straightness --out "$out/$c/dopri5" 2>&1 | grep -E "NFE|straightness" | sed "s/^/$c: /"
done
