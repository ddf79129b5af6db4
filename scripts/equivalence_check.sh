#!/usr/bin/env bash
# scripts/gpu_check.sh hook "equivalence": TrainEquivalence (tests/test_train_equivalence.cpp) on FM_DEVICE, with its
# per-step table kept: fm's training steps against PyTorch running the same recipe (float32 and bf16 autocast on
# CUDA, float64 and float32 on the CPU). The table goes to FM_HOOK_OUT/equivalence.md.
# Environment (set by gpu_check.sh): FM_BIN (fm; the test binary is beside it in tests/), FM_DEVICE, FM_HOOK_OUT.
# Exit 0 pass, 77 skip (torchcfm missing), else fail.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
TESTS_BIN=$(dirname "${FM_BIN:-build/fm}")/tests/fm_tests
OUT=${FM_HOOK_OUT:-runs/equivalence_check}
mkdir -p "$OUT"
[ -x "$TESTS_BIN" ] || { echo "no test binary at $TESTS_BIN"; exit 1; }
FM_TEST_DEVICE=${FM_DEVICE:-cpu} OMP_NUM_THREADS=1 "$TESTS_BIN" --gtest_filter='TrainEquivalence.*' > "$OUT/equivalence.log" 2>&1
rc=$?
{
  echo "## TrainEquivalence on ${FM_DEVICE:-cpu}"
  echo
  echo '```'
  grep -E '^(fm |distance|step |  *[0-9]+  )' "$OUT/equivalence.log"
  echo '```'
} > "$OUT/equivalence.md"
if grep -q '\[  SKIPPED \]' "$OUT/equivalence.log"; then
  echo "skipped: $(grep -m1 -i 'skip' "$OUT/equivalence.log" | cut -c1-160)"
  exit 77
fi
[ $rc = 0 ] && echo "passed; per-step differences in equivalence.md" && exit 0
echo "failed: $(grep -m1 -A2 'Failure' "$OUT/equivalence.log" | tr '\n' ' ' | cut -c1-200)"
exit 1
