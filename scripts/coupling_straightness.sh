#!/usr/bin/env bash
# Independent against OT coupling on the same recipe, seed and steps: dopri5 NFE at atol = rtol = 1e-5 and the
# straightness of the sampled trajectories (fm sample --straightness), for the README's table.
# Usage: [SAMPLES=N] [BATCH=B] [SAMPLE_ARGS=...] scripts/coupling_straightness.sh [CONFIG] [OUT] [extra --set overrides...]
#   default configs/toy2d.json into runs/coupling, 10000 samples in one batch; e.g. for the image demo:
#   SAMPLES=1000 BATCH=250 SAMPLE_ARGS="--classes all" \
#     scripts/coupling_straightness.sh configs/shapes_cpu.json runs/coupling_shapes
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/toy2d.json}
out=${2:-runs/coupling}
shift $(( $# > 2 ? 2 : $# ))
samples=${SAMPLES:-10000}
batch=${BATCH:-$samples}
read -r -a sample_args <<<"${SAMPLE_ARGS:-}"
sets=()
for kv in "$@"; do sets+=(--set "$kv"); done
for c in independent ot; do
  ./build/fm train --config "$config" --out "$out/$c" --set path.coupling="$c" "${sets[@]}"
  ckpt=$(ls "$out/$c"/checkpoints/*.pt | tail -n 1)
  ./build/fm sample --checkpoint "$ckpt" -n "$samples" --batch "$batch" --solver dopri5 --atol 1e-5 --rtol 1e-5 \
    --straightness "${sample_args[@]}" --out "$out/$c/dopri5" 2>&1 | grep -E "NFE|straightness" | sed "s/^/$c: /"
done
