#!/usr/bin/env bash
# Whole-tree check on a GPU host: build everything, run the whole ctest suite (CPU and GPU
# tests), a short gpt_small training run on CUDA, and bench_step at B=16. Logs go to $OUT.
#   OUT=/tmp/out tools/gpu/run_all.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
export NCCL_NVLS_ENABLE=0
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
[ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
t0=$(date +%s)
{ cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 &&
  ninja -C build-gpu -j"$(nproc)"; } >"$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head; tail -30 "$OUT/build.log"; exit 1; }
echo "== build $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
ctest --test-dir build-gpu -j8 --timeout 300 >"$OUT/ctest.log" 2>&1
echo "== ctest rc=$? $(( $(date +%s) - t0 )) s"
grep -E "tests passed|Failed|\*\*\*|Not Run" "$OUT/ctest.log" | head -30
grep -c "Skipped" "$OUT/ctest.log" | sed 's/^/== skipped: /'
t0=$(date +%s)
build-gpu/bin/train --config configs/gpt_small.yaml --set train.device=cuda --set train.max_steps=30 \
  --set train.grad_accum=1 --set log.out_dir=/tmp/gpt_small_gpu --set log.eval_every=15 --set log.eval_batches=2 \
  --set log.log_every=5 --set log.checkpoint_every=0 >"$OUT/train_gpu.log" 2>&1
echo "== train gpt_small cuda rc=$? $(( $(date +%s) - t0 )) s"
tail -12 "$OUT/train_gpu.log"
cp /tmp/gpt_small_gpu/metrics.jsonl "$OUT/train_gpu_metrics.jsonl" 2>/dev/null
build-gpu/bin/bench_step --help >/dev/null 2>&1 && timeout 120 build-gpu/bin/bench_step --batch-size 16 >"$OUT/bench_step.log" 2>&1
echo "== bench_step rc=$?"; tail -8 "$OUT/bench_step.log"
