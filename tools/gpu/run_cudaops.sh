#!/usr/bin/env bash
# The CUDA backend's GPU checks in one command (device tool or by hand):
#   tools/gpu/run_cudaops.sh
# Uses binaries carried in $BUILD (default build-cudaops) when they run on this host, else
# builds backend_ops_test, ops_cuda_test, gpt_cuda_test and bench_step into build-gpu. Then runs the CUDA op
# tests, the GPT CPU-vs-GPU test and bench_step on configs/gpt_small.yaml at B=16 and B=32
# (T=1024, bf16, --profile). Logs and JSON go to $OUT (or ./gpu-out); a summary is printed last.
set -uo pipefail
cd "$(dirname "$0")/../.."
. tools/gpu/host_env.sh
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
B=${BUILD:-build-cudaops}
# Carried binaries may need this host's CUDA libraries and the build host's yaml-cpp ($B/libs).
export LD_LIBRARY_PATH=$PWD/$B/libs:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}
STEPS=${STEPS:-10}; WARMUP=${WARMUP:-3}
START=$(date +%s)
summary=()
note() { summary+=("$*"); echo "== $*"; }
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv,noheader

if ! ./$B/tests/backend_ops_test --gtest_list_tests >"$OUT/carried.log" 2>&1 || ! ./$B/bin/bench_step --help >>"$OUT/carried.log" 2>&1; then
  [ "${BUILD_FALLBACK:-1}" = 1 ] || { note "carried binaries do not run here: $(tail -2 "$OUT/carried.log")"; exit 1; }
  note "carried binaries do not run here ($(tail -1 "$OUT/carried.log")): building"
  B=build-gpu
  [ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"
  t0=$(date +%s)
  { cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 "${CMAKE_DEPS[@]}" &&
    ninja -C $B -j"$(nproc)" backend_ops_test ops_cuda_test gpt_cuda_test bench_step; } >"$OUT/build.log" 2>&1
  rc=$?
  note "build rc=$rc in $(( $(date +%s) - t0 )) s"
  if [ $rc -ne 0 ]; then grep -E "error|Error" "$OUT/build.log" | head -20; tail -20 "$OUT/build.log"; exit 1; fi
fi

for t in backend_ops_test ops_cuda_test gpt_cuda_test; do
  t0=$(date +%s)
  timeout ${TEST_TIMEOUT:-150} ./$B/tests/$t >"$OUT/$t.log" 2>&1
  rc=$?
  grep -E "Failure|FAILED|error|Error|rel|gradient of" "$OUT/$t.log" | head -30
  note "$t rc=$rc in $(( $(date +%s) - t0 )) s: $(grep -E '^\[  PASSED|^\[  FAILED  \] [0-9]|^\[  SKIPPED \] [0-9]' "$OUT/$t.log" | tr '\n' ' ')"
done

for bs in 16 32; do
  t0=$(date +%s)
  timeout ${BENCH_TIMEOUT:-120} ./$B/bin/bench_step --batch-size $bs --steps $STEPS --warmup $WARMUP --profile --profile-steps 2 \
    --out "$OUT/bench_b$bs.json" >"$OUT/bench_b$bs.log" 2>&1
  note "bench_step B=$bs rc=$? in $(( $(date +%s) - t0 )) s"
done

echo
echo "==================== summary ($(( $(date +%s) - START )) s) ===================="
printf '%s\n' "${summary[@]}"
for bs in 16 32; do echo "--- B=$bs"; cat "$OUT/bench_b$bs.log"; done
true
