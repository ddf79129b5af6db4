#!/usr/bin/env bash
# scripts/gpu_check.sh hook "nccl", two checks under torchrun:
# 1. The shapes demo, shortened, trained by one process. A launched job is a process group even of one, so this builds
#    the NCCL communicator on cuda:LOCAL_RANK, averages every step's gradients through it from autograd's hooks and
#    agrees on the stop flag over it: the multi-GPU path on one GPU.
# 2. A stopped rank: two processes train, and once training runs one is stopped (SIGSTOP). The other must end within
#    dist.timeout_s plus a margin with fm's one line "rank 0 of 2: ... did not answer within dist.timeout_s=N s", not
#    hang in a device sync nor die by NCCL's watchdog (SIGABRT). With one GPU both ranks share it: NCCL refuses two
#    ranks on one GPU of one host, so each rank names a host of its own (NCCL_HOSTID) and they talk over sockets on
#    loopback; with more GPUs each rank takes its own.
# In a dry run (FM_DEVICE=cpu) both go through Gloo.
# Environment (set by gpu_check.sh): FM_BIN, FM_DEVICE (cuda; cpu in a dry run), FM_DRY_RUN (0/1), FM_HOOK_OUT,
# FM_PYTHON (the python whose torchrun to use; default python3). Exit 0 pass, 77 skip, else fail.
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
mkdir -p "$OUT"

# ---- 1. one process ---------------------------------------------------------------------------------------------------
# A dry run trains a quarter of the steps: on a busy 2-core machine 200 CPU steps alone can take the hook's 120 s.
STEPS=$([ "${FM_DRY_RUN:-0}" = 1 ] && echo 50 || echo 200)
rm -rf "$OUT/run"
t0=$(date +%s)
OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} "$TORCHRUN" --no-python --standalone --nproc-per-node 1 \
  "$FM" train --config configs/shapes_cpu.json --device "$DEVICE" --out "$OUT/run" \
  --set "train.steps=$STEPS" train.log_every=25 train.sample_every=0 dist.timeout_s=60 > "$OUT/torchrun.log" 2>&1
rc=$?
tail -5 "$OUT/torchrun.log"
if [ $rc != 0 ] || [ ! -s "$OUT/run/metrics.jsonl" ]; then
  echo "torchrun fm train ($BACKEND, 1 process) exited $rc: $(grep -m1 -i 'error' "$OUT/torchrun.log" | cut -c1-150)"
  exit 1
fi
last=$(tail -1 "$OUT/run/metrics.jsonl")
one=$("$PY" - "$last" "$BACKEND" "$(( $(date +%s) - t0 ))" <<'PY'
import json, sys
m = json.loads(sys.argv[1])
print(f"{sys.argv[2]} world size {m['world_size']}: {m['step']} steps under torchrun in {sys.argv[3]} s, "
      f"loss {m['loss']:.3f}, {m['samples_per_s']:.0f} images/s")
PY
)
echo "$one"

# ---- 2. a stopped rank ------------------------------------------------------------------------------------------------
TIMEOUT_S=10
MARGIN_S=20
STOP=$OUT/stop
rm -rf "$STOP"
mkdir -p "$STOP"
# Each rank's own NCCL_HOSTID, set by a shell that then becomes fm (exec: torchrun's worker is fm itself).
OMP_NUM_THREADS=1 NCCL_SOCKET_IFNAME=lo NCCL_IB_DISABLE=1 "$TORCHRUN" --no-python --standalone --nproc-per-node 2 \
  bash -c 'NCCL_HOSTID=fm-nccl-check-rank$RANK exec "$@"' rank \
  "$FM" train --config configs/shapes_cpu.json --device "$DEVICE" --out "$STOP/run" \
  --set train.steps=100000 train.log_every=1 train.sample_every=0 train.ckpt_every=100000 \
  "dist.timeout_s=$TIMEOUT_S" > "$STOP/torchrun.log" 2>&1 &
tr=$!
# torchrun's workers, told apart by RANK in their environment.
worker() { for p in $(pgrep -P "$tr"); do grep -qz "^RANK=$1$" "/proc/$p/environ" 2>/dev/null && echo "$p"; done; }
# Gone, or a zombie waiting for torchrun to reap it.
ended() { local s; s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null); [ -z "$s" ] || [ "$s" = Z ]; }
for _ in $(seq 900); do [ -s "$STOP/run/metrics.jsonl" ] && break; ended "$tr" && break; sleep 0.2; done
p0=$(worker 0)
p1=$(worker 1)
if [ ! -s "$STOP/run/metrics.jsonl" ] || [ -z "$p0" ] || [ -z "$p1" ]; then
  kill -KILL "$p0" "$p1" 2>/dev/null
  wait "$tr"
  tail -5 "$STOP/torchrun.log"
  echo "two ranks ($BACKEND) did not start training: $(grep -m1 -i 'error' "$STOP/torchrun.log" | cut -c1-150)"
  exit 1
fi
kill -STOP "$p1"
t0=$(date +%s.%N)
limit=$(( TIMEOUT_S + MARGIN_S + 30 ))
while ! ended "$p0" && [ "$(awk -v t0="$t0" -v now="$(date +%s.%N)" 'BEGIN{print int(now - t0)}')" -lt $limit ]; do
  sleep 0.2
done
took=$(awk -v t0="$t0" -v now="$(date +%s.%N)" 'BEGIN{printf "%.1f", now - t0}')
kill -KILL "$p1" 2>/dev/null
kill -CONT "$p1" 2>/dev/null
ended "$p0" || kill -KILL "$p0" 2>/dev/null
wait "$tr"
line=$(grep -m1 -E "rank 0 of 2: .*did not answer within dist.timeout_s=$TIMEOUT_S s" "$STOP/torchrun.log")
tail -5 "$STOP/torchrun.log"
if [ -z "$line" ]; then
  echo "rank 0 ($BACKEND) did not end with the timeout line after rank 1 was stopped ($took s): $(grep -m1 -iE 'error|abort' "$STOP/torchrun.log" | cut -c1-150)"
  exit 1
fi
if grep -q SIGABRT "$STOP/torchrun.log"; then
  echo "a rank ($BACKEND) was aborted (SIGABRT) instead of ending with the timeout line"
  exit 1
fi
if awk -v t="$took" -v max=$(( TIMEOUT_S + MARGIN_S )) 'BEGIN{exit !(t > max)}'; then
  echo "rank 0 ($BACKEND) took $took s after rank 1 was stopped, more than dist.timeout_s=$TIMEOUT_S + $MARGIN_S s"
  exit 1
fi
echo "$one; rank 1 of 2 stopped: rank 0 ended after $took s (dist.timeout_s=$TIMEOUT_S) with the timeout line"
