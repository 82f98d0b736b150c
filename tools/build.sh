#!/usr/bin/env bash
# Installs missing packages, configures (once) and builds ztrain into ${BUILD_DIR:-build}.
# CUDA is on when nvcc is found; ZTRAIN_CUDA=OFF forces a CPU-only build; ZTRAIN_SANITIZE=ON
# builds with ASan + UBSan; ZTRAIN_FUZZ=ON (with CXX=clang++) adds the fuzz targets.
# Incremental: a second run only rebuilds what changed. Arguments name targets to build
# (default: everything), e.g. `tools/build.sh train prepare_data`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh
[ "${ZTRAIN_FUZZ:-}" = ON ] && export CXX="${CXX:-clang++}"  # libFuzzer is clang's
build=${BUILD_DIR:-build}
[ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"
args=(-G Ninja -DCMAKE_BUILD_TYPE=Release)
[ -n "${ZTRAIN_CUDA:-}" ] && args+=(-DZTRAIN_CUDA="$ZTRAIN_CUDA")
[ -n "${ZTRAIN_SANITIZE:-}" ] && args+=(-DZTRAIN_SANITIZE="$ZTRAIN_SANITIZE")
[ -n "${ZTRAIN_FUZZ:-}" ] && args+=(-DZTRAIN_FUZZ="$ZTRAIN_FUZZ")
if [ ! -f "$build/build.ninja" ] || [ -n "${ZTRAIN_CUDA:-}${ZTRAIN_SANITIZE:-}${ZTRAIN_FUZZ:-}" ]; then
  mkdir -p "$build"
  cmake -S . -B "$build" "${args[@]}" >"$build/configure.log" 2>&1 || { cat "$build/configure.log"; exit 1; }
  grep "ztrain:" "$build/configure.log" || true
fi
targets=()
for t in "$@"; do targets+=(--target "$t"); done
cmake --build "$build" -j "$(nproc)" "${targets[@]}"
