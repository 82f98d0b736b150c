#!/usr/bin/env bash
# The cross-entropy CUDA work on a GPU host, in one command (device tool or by hand):
#
#   tools/gpu/run_xent.sh [phase...]      phases, run in this order: build test nccl bench xent
#                                         sweep confirm sanitize ncu (default: all but nccl, confirm)
#
# Builds into build-gpu (Release, sm_90), runs the CUDA tests, compute-sanitizer on small
# shapes, xent --device cuda against --device cpu, bench_xent --device cuda, a sweep of the
# fast kernel's configurations, and ncu profiles. `nccl` (a 2-GPU host; the NCCL tests run in
# `test`) runs xent --device cuda --tp 2 against --tp 1. Logs go to $OUT (or ./gpu-out) and a summary is
# printed last. NCCL_NVLS_ENABLE=0 stays set for every process.
set -uo pipefail
cd "$(dirname "$0")/../.."
. tools/gpu/host_env.sh
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
B=build-gpu
phases=("$@")
[ ${#phases[@]} -eq 0 ] && phases=(build test bench xent sweep sanitize ncu)
summary=()
note() { summary+=("$*"); echo "== $*"; }
START=$(date +%s)
DEADLINE=${DEADLINE:-540}  # seconds: later phases are skipped past it (the device call's limit is 600)
has() {
  local p
  for p in "${phases[@]}"; do
    if [ "$p" = "$1" ]; then
      if [ $(( $(date +%s) - START )) -ge "$DEADLINE" ]; then note "skipped $1: past ${DEADLINE} s"; return 1; fi
      return 0
    fi
  done
  return 1
}

nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv | tee -a "$OUT/build.log"

if has build; then
  t0=$(date +%s)
  { [ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"
    cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 "${CMAKE_DEPS[@]}" &&
    ninja -C $B -j16 cross_entropy_cuda_test tensor_cuda_test nccl_test bench_xent xent; } >>"$OUT/build.log" 2>&1
  rc=$?
  note "build rc=$rc in $(( $(date +%s) - t0 )) s"
  if [ $rc -ne 0 ]; then tail -40 "$OUT/build.log"; exit 1; fi
fi

if has test; then
  # A short smoke run first: a kernel that hangs costs one minute, not five.
  timeout 60 ./$B/tests/cross_entropy_cuda_test --gtest_filter='CrossEntropyCuda.ZLoss*' >/tmp/zt_smoke.log 2>&1
  rc=$?
  cat /tmp/zt_smoke.log >>"$OUT/tests.log"
  note "smoke rc=$rc: $(grep -E '^\[  PASSED|^\[  FAILED  \] [0-9]' /tmp/zt_smoke.log | tr '\n' ' ')"
  if [ $rc -eq 124 ]; then echo "smoke test hung: stopping"; tail -20 /tmp/zt_smoke.log; exit 1; fi
  for t in tensor_cuda_test cross_entropy_cuda_test nccl_test; do
    t0=$(date +%s)
    limit=120; [ $t = cross_entropy_cuda_test ] && limit=240
    timeout $limit ./$B/tests/$t >/tmp/zt_test.log 2>&1
    rc=$?
    cat /tmp/zt_test.log >>"$OUT/tests.log"
    grep -E "Failure|FAILED|error:" /tmp/zt_test.log | head -20
    note "$t rc=$rc in $(( $(date +%s) - t0 )) s: $(grep -E '^\[==========\] [0-9]+ tests? from .* ran|^\[  PASSED|^\[  SKIPPED \] [0-9]|^\[  FAILED  \] [0-9]' /tmp/zt_test.log | tr '\n' ' ')"
  done
fi

if has nccl; then
  nvidia-smi topo -m | tee -a "$OUT/nccl.log"
  d=$(mktemp -d)
  python3 - "$d" <<'PY'
import numpy as np, sys
d = sys.argv[1]; r = np.random.default_rng(8)
np.save(f"{d}/logits.npy", (3 * r.standard_normal((96, 50304))).astype(np.float32))
t = r.integers(0, 50304, 96); t[::5] = -100
np.save(f"{d}/targets.npy", t.astype(np.int64))
PY
  for tp in 1 2; do
    timeout 120 ./$B/bin/xent --logits $d/logits.npy --targets $d/targets.npy --label-smoothing 0.1 --z-loss-weight 1e-3 \
      --device cuda --tp $tp --out $d/tp$tp 2>&1 | tail -3
  done
  note "xent --tp 2 vs --tp 1 (cuda): $(python3 - "$d" <<'PY'
import numpy as np, sys
d = sys.argv[1]; out = []
for f in ("loss", "lse", "z_loss", "grad"):
    a, b = np.load(f"{d}/tp2/{f}.npy").astype(np.float64), np.load(f"{d}/tp1/{f}.npy").astype(np.float64)
    rel = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)
    out.append(f"{f} rel {rel:.1e} {'ok' if rel <= 2e-5 else 'FAIL'}")
print("; ".join(out))
PY
)"
fi

if has bench; then
  ./$B/bin/bench_xent --device cuda --out "$OUT/bench.json" 2>"$OUT/bench.log" | tee "$OUT/bench.md"
  note "bench rc=${PIPESTATUS[0]}"
fi

if has xent; then
  d=$(mktemp -d)
  python3 - "$d" <<'PY'
import numpy as np, sys
d = sys.argv[1]; r = np.random.default_rng(7)
np.save(f"{d}/logits.npy", (3 * r.standard_normal((64, 50304))).astype(np.float32))
t = r.integers(0, 50304, 64); t[::7] = -100
np.save(f"{d}/targets.npy", t.astype(np.int64))
PY
  ./$B/bin/xent --logits $d/logits.npy --targets $d/targets.npy --label-smoothing 0.1 --z-loss-weight 1e-3 --device cpu --out $d/cpu &&
  ./$B/bin/xent --logits $d/logits.npy --targets $d/targets.npy --label-smoothing 0.1 --z-loss-weight 1e-3 --device cuda --out $d/cuda &&
  ./$B/bin/xent --logits $d/logits.npy --targets $d/targets.npy --label-smoothing 0.1 --z-loss-weight 1e-3 --device cuda --dtype bf16 --out $d/cudabf
  note "xent cuda vs cpu: $(python3 - "$d" <<'PY'
import numpy as np, sys
d = sys.argv[1]; out = []
for run, tol in (("cuda", 2e-5), ("cudabf", 1e-2)):
    for f in ("loss", "lse", "z_loss", "grad"):
        a, b = np.load(f"{d}/{run}/{f}.npy").astype(np.float64), np.load(f"{d}/cpu/{f}.npy").astype(np.float64)
        rel = np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30)
        out.append(f"{run}/{f} rel {rel:.1e} {'ok' if rel <= tol else 'FAIL'}")
print("; ".join(out))
PY
)"
fi

if has sweep; then
  # Configurations of the fast kernel (env knobs of ops/cross_entropy_cuda.cu), kernel time only.
  sweep() {
    local shape=$1; shift
    local cfg line
    for cfg in "$@"; do
      line=$(env $cfg ./$B/bin/bench_xent --device cuda --shapes $shape --variants fused --iters 30 2>/dev/null |
             grep "| fused |" | awk -F'|' '{print $5, $8}')
      echo "$shape [${cfg:-auto}] ms %floor: $line" | tee -a "$OUT/sweep.log"
    done
  }
  sweep 8192x50304 "" "ZT_XENT_THREADS=512" "ZT_XENT_STAGES=2" "ZT_XENT_CLUSTER=2" \
    "ZT_XENT_CLUSTER=2 ZT_XENT_EXCHANGE=push" "ZT_XENT_CLUSTER=3 ZT_XENT_EXCHANGE=push"
  sweep 16384x128256 "" "ZT_XENT_EXCHANGE=push" "ZT_XENT_THREADS=512" "ZT_XENT_EXCHANGE=push ZT_XENT_THREADS=512" \
    "ZT_XENT_EXCHANGE=push ZT_XENT_STAGES=2" "ZT_XENT_CLUSTER=4" "ZT_XENT_CLUSTER=4 ZT_XENT_EXCHANGE=push" \
    "ZT_XENT_CLUSTER=6 ZT_XENT_EXCHANGE=push" "ZT_XENT_CLUSTER=8 ZT_XENT_EXCHANGE=push"
  for cfg in "" "ZT_XENT_EXCHANGE=push"; do
    line=$(env $cfg ./$B/bin/bench_xent --device cuda --dtype f32 --shapes 8192x50304,2048x128256 --variants fused \
           --iters 30 2>/dev/null | grep "| fused |" | awk -F'|' '{print $2, $3, $5, $8}' | tr '\n' ';')
    echo "f32 [${cfg:-auto}] shape dtype ms %floor: $line" | tee -a "$OUT/sweep.log"
  done
  note "sweep done ($(wc -l <"$OUT/sweep.log") lines)"
fi

if has confirm; then
  # The chosen defaults against their nearest alternatives (kernel time only).
  for args in "--shapes 16384x128256" "--dtype f32 --shapes 8192x50304,2048x128256"; do
    for cfg in "" "ZT_XENT_CLUSTER=3" "ZT_XENT_CLUSTER=2" "ZT_XENT_CLUSTER=6"; do
      line=$(env $cfg ./$B/bin/bench_xent --device cuda $args --variants fused --iters 30 2>/dev/null |
             grep "| fused |" | awk -F'|' '{print $2, $3, $5, $8}' | tr '\n' ';')
      echo "[${cfg:-auto}] shape dtype ms %floor: $line" | tee -a "$OUT/sweep.log"
    done
  done
  note "confirm done"
fi

if has sanitize; then
  san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  f='CrossEntropyCuda.ZLoss*:CrossEntropyCuda.OtherShapes*:CrossEntropyCuda.VocabParallel*:CrossEntropyCuda.BadTarget*:CrossEntropyCuda.Captured*'
  timeout 240 $san --tool memcheck --leak-check no ./$B/tests/cross_entropy_cuda_test --gtest_filter="$f" >"$OUT/sanitizer.log" 2>&1
  note "memcheck rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer.log" | tail -1)"
  timeout 150 $san --tool racecheck ./$B/tests/cross_entropy_cuda_test --gtest_filter='CrossEntropyCuda.ZLoss*' >>"$OUT/sanitizer.log" 2>&1
  note "racecheck rc=$? $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/sanitizer.log" | tail -1)"
  for cfg in "ZT_XENT_CLUSTER=4" "ZT_XENT_CLUSTER=3 ZT_XENT_EXCHANGE=barrier"; do
    env $cfg timeout 120 $san --tool memcheck --leak-check no ./$B/tests/cross_entropy_cuda_test \
      --gtest_filter='CrossEntropyCuda.ZLoss*' >>"$OUT/sanitizer.log" 2>&1
    note "memcheck [$cfg] rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer.log" | tail -1)"
    env $cfg timeout 120 $san --tool racecheck ./$B/tests/cross_entropy_cuda_test \
      --gtest_filter='CrossEntropyCuda.ZLoss*' >>"$OUT/sanitizer.log" 2>&1
    note "racecheck [$cfg] rc=$? $(grep -E 'RACECHECK SUMMARY' "$OUT/sanitizer.log" | tail -1)"
  done
fi

if has ncu; then
  ncu_bin=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  for shape in 8192x50304 16384x128256; do
    timeout 120 $ncu_bin --clock-control none -k regex:fused_cluster --launch-skip 3 --launch-count 1 \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats \
      --section SchedulerStats --section WarpStateStats \
      ./$B/bin/bench_xent --device cuda --shapes $shape --variants fused --iters 2 --warmup 2 >>"$OUT/ncu.log" 2>&1
    note "ncu $shape rc=$? $(grep -E 'DRAM Throughput|Duration' "$OUT/ncu.log" | tail -2 | tr -s ' ' | tr '\n' ';')"
  done
fi

echo
echo "==================== summary ===================="
printf '%s\n' "${summary[@]}"
[ -f "$OUT/bench.md" ] && cat "$OUT/bench.md"
[ -f "$OUT/sweep.log" ] && cat "$OUT/sweep.log"
true
