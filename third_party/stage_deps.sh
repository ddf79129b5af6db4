#!/usr/bin/env bash
# Stages the Debian packages fm builds against (headers, CMake files, libraries) into one folder, by default .stage/,
# for a machine that has a compiler, CMake and torch but no package registry (the GPU machine of scripts/gpu_check.sh),
# and, in DIR/wheels/, the pure-Python reference packages the tests and the benchmark compare with that such a machine
# lacks (scripts/gpu_check.sh installs them into a scratch folder there).
# The folder is ignored by git and travels with the working tree; CMake uses it, and nothing from /usr for these
# libraries, when configured with -DFM_STAGED_DEPS=.stage.
#
# Usage: bash third_party/stage_deps.sh [--out DIR] [EXTRA_PACKAGE ...]
# Needs apt-get (the packages are downloaded, or taken from /var/cache/apt/archives) and dpkg-deb. Re-running
# replaces the folder. Everything staged is listed with its version in DIR/MANIFEST.
set -euo pipefail
cd "$(dirname "$0")/.."

# One line per library fm links. A -dev package's shared library lives in a second package: stage both.
PKGS=(
  libcli11-dev                    # CLI11 (header-only)
  nlohmann-json3-dev              # nlohmann/json (header-only)
  libspdlog-dev libspdlog1.10     # spdlog and its shared library
  libfmt-dev libfmt9              # fmt, which spdlog is built against
  libstb-dev libstb0              # stb_image, stb_image_write
  libgtest-dev                    # GoogleTest (static libraries)
  zlib1g-dev zlib1g               # zlib (.npz files)
  libzip-dev libzip4              # libzip (the zip container under .npz)
  libxxhash-dev libxxhash0        # xxHash (checkpoint checksums)
  libprotobuf-dev libprotobuf32 libprotobuf-lite32  # protobuf (TensorBoard event records)
  protobuf-compiler libprotoc32   # protoc, run at build time (with LD_LIBRARY_PATH on the stage)
  libgloo-dev                     # gloo headers for c10d's ProcessGroupGloo (its symbols are in libtorch)
)

# The Python references, pinned to the versions scripts/setup.sh installs; pure Python (py3-none-any), their own
# dependencies (torch, numpy, scipy, pillow, requests) are on the GPU machine already. torchcfm's POT import is not
# needed: the tests load only its U-Net and flow matchers.
WHEELS=(torchcfm==1.0.7 pytorch-fid==0.3.0 clean-fid==0.1.35)

OUT=.stage
if [ "${1:-}" = --out ]; then OUT=$2; shift 2; fi
PKGS+=("$@")
log() { printf '[stage] %s\n' "$*" >&2; }

DEBS=$(mktemp -d)
trap 'rm -rf "$DEBS"' EXIT
for p in "${PKGS[@]}"; do
  ver=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')
  [ -n "$ver" ] && [ "$ver" != "(none)" ] || { echo "stage_deps.sh: no Debian package '$p' (apt-get update?)" >&2; exit 2; }
  # apt names files with the epoch's ':' escaped as %3a.
  cached=/var/cache/apt/archives/${p}_${ver//:/%3a}_$(dpkg --print-architecture).deb
  [ -f "$cached" ] || cached=/var/cache/apt/archives/${p}_${ver//:/%3a}_all.deb
  if [ -f "$cached" ]; then
    cp "$cached" "$DEBS/"
  else
    (cd "$DEBS" && apt-get download -q "$p=$ver" >/dev/null 2>&1) ||
      { echo "stage_deps.sh: cannot download $p=$ver (no network? the apt cache lacks it too)" >&2; exit 1; }
  fi
done

rm -rf "$OUT"
mkdir -p "$OUT"
for deb in "$DEBS"/*.deb; do
  dpkg-deb -x "$deb" "$OUT"
  dpkg-deb -W --showformat='${Package} ${Version}\n' "$deb" >> "$OUT/MANIFEST"
done
# Merged /usr: runtime libraries some packages ship under /lib go beside the rest, so one prefix (OUT/usr) holds all.
if [ -d "$OUT/lib" ]; then
  cp -a "$OUT/lib/." "$OUT/usr/lib/"
  rm -rf "$OUT/lib"
fi
# Absolute links (libz.so -> /lib/x86_64-linux-gnu/libz.so.1.2.13) would point at this machine's files: repoint them
# inside the folder, relatively, so that it can move.
while IFS= read -r link; do
  target=$(readlink "$link")
  case $target in
    /lib/*) inside="$OUT/usr$target" ;;
    /*) inside="$OUT$target" ;;
    *) continue ;;
  esac
  [ -e "$inside" ] || { echo "stage_deps.sh: $link points to $target, which no staged package holds" >&2; exit 1; }
  ln -sfr "$inside" "$link"
done < <(find "$OUT" -type l)
rm -rf "$OUT/usr/share/doc" "$OUT/usr/share/man" "$OUT/usr/share/lintian"
find "$OUT" -xtype l -delete  # e.g. usr/src/gtest, into the GoogleTest sources, which are not staged
PY=${FM_PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
"$PY" -m pip download -q --no-deps --only-binary=:all: -d "$OUT/wheels" "${WHEELS[@]}" ||
  { echo "stage_deps.sh: cannot download the wheels ${WHEELS[*]} (no network?)" >&2; exit 1; }
for w in "$OUT"/wheels/*.whl; do echo "wheel $(basename "$w")" >> "$OUT/MANIFEST"; done
log "staged ${#PKGS[@]} packages into $OUT ($(du -sh "$OUT" | cut -f1)); see $OUT/MANIFEST"
