#!/usr/bin/env bash
# Installs everything fm needs on a fresh Debian 12 machine and builds it into build/.
# Run as root (it uses apt-get) from anywhere: bash scripts/setup.sh
# Re-running is safe and quick: installed packages and the venv are kept, the build is incremental.
#
# Environment:
#   Torch_DIR=/path/to/libtorch/share/cmake/Torch   use your own LibTorch instead of the torch wheel
#   FM_TORCH_VERSION=2.11.0                         the torch wheel to pin (default 2.11.0)
#   FM_SKIP_APT=1                                   do not call apt-get (packages already present)
#   FM_SKIP_FUZZ=1                                  do not build the fuzz harnesses (then test with FM_FUZZ_SECONDS=0)
#   FM_BUILD_TYPE=Release                           CMake build type
#   FM_SANITIZE=1                                   build all of build-asan instead of build: clang with AddressSanitizer
#                                                   and UBSan, fm, the unit tests and the libFuzzer harnesses
#
# Besides build/, every run builds the libFuzzer harnesses (clang, ASan + UBSan) into build-asan/, and only those:
# scripts/test.sh replays each reader's corpus for a few seconds after the unit tests (see scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TORCH_VERSION=${FM_TORCH_VERSION:-2.11.0}

log() { printf '[setup] %s\n' "$*" >&2; }

# 1. Debian packages: toolchain and the C++ libraries fm uses.
PKGS=(build-essential cmake ninja-build ccache pkg-config python3 python3-venv python3-pip zlib1g-dev
      libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libstb-dev libgtest-dev libxxhash-dev
      libprotobuf-dev protobuf-compiler libzip-dev libgloo-dev clang libclang-rt-14-dev)
SANITIZE=${FM_SANITIZE:-0}
if [ "${FM_SKIP_APT:-0}" != 1 ]; then
  missing=()
  for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# 2. The project venv: the torch wheel (LibTorch for CMake) and the Python references the tests compare against.
PY=${FM_PYTHON_BOOTSTRAP:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
REQS=(numpy scipy torchdiffeq pytorch-fid==0.3.0 clean-fid==0.1.35 safetensors tensorboard pot torchcfm==1.0.7)
if [ -z "${Torch_DIR:-}" ]; then REQS=("torch==${TORCH_VERSION}" "${REQS[@]}"); fi
if ! "$VPY" - "${REQS[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version, PackageNotFoundError
for req in sys.argv[1:]:
    name, _, want = req.partition("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        sys.exit(1)
    if want and have.split("+")[0] != want:
        sys.exit(1)
PY
then
  log "pip install ${REQS[*]} (the torch wheel is large: this takes a few minutes the first time)"
  "$VPY" -m pip install -q --upgrade pip
  # torch is pinned first so that nothing else moves it.
  if [ -z "${Torch_DIR:-}" ]; then "$VPY" -m pip install -q "torch==${TORCH_VERSION}"; fi
  # torchcfm is a test reference; its training dependencies beyond POT are not needed.
  # pytorch-fid pulls torchvision; pinning torch alongside keeps pip from upgrading it.
  PIN=(); [ -z "${Torch_DIR:-}" ] && PIN=("torch==${TORCH_VERSION}")
  # safetensors and tensorboard read back what fm export and fm train's event files write (tests/test_interop.cpp);
  # POT is what torchcfm's own __init__ imports, so that `from torchcfm... import` works as a user writes it.
  # clean-fid is the reference of fm's --resize clean (tests/test_fid.cpp; it brings Pillow, requests and tqdm); both
  # FID references are pinned to the versions the tests were checked against.
  "$VPY" -m pip install -q numpy scipy torchdiffeq pytorch-fid==0.3.0 clean-fid==0.1.35 safetensors tensorboard pot "${PIN[@]}"
  "$VPY" -m pip install -q --no-deps torchcfm==1.0.7
fi

# 3. Configure and build.
BUILD=build
CMAKE_ARGS=(-G Ninja -DCMAKE_BUILD_TYPE="${FM_BUILD_TYPE:-Release}")
if [ "$SANITIZE" = 1 ]; then
  BUILD=build-asan
  CMAKE_ARGS+=(-DCMAKE_CXX_COMPILER=clang++ -DFM_FUZZ=ON)
fi
[ -n "${Torch_DIR:-}" ] && CMAKE_ARGS+=(-DTorch_DIR="$Torch_DIR")
if [ ! -f "$BUILD/build.ninja" ]; then
  log "configuring $BUILD"
  cmake -S . -B "$BUILD" "${CMAKE_ARGS[@]}" >/dev/null
fi
log "building $BUILD (a clean build takes a few minutes on 2 cores)"
start=$(date +%s)
cmake --build "$BUILD" -j "$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)"  # nproc alone honours OMP_NUM_THREADS
log "built in $(( $(date +%s) - start )) s: $ROOT/$BUILD/fm"

# 4. The fuzz harnesses (already built above when FM_SANITIZE=1): only the readers they exercise, not all of fm.
if [ "$SANITIZE" != 1 ] && [ "${FM_SKIP_FUZZ:-0}" != 1 ]; then
  start=$(date +%s)
  bash scripts/fuzz.sh --build-only
  log "fuzz harnesses built in $(( $(date +%s) - start )) s: $ROOT/build-asan/fuzz/"
fi
