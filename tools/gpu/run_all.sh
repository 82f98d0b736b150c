#!/usr/bin/env bash
# Whole-tree check on a GPU host, in one call: build everything, run the whole ctest suite
# (CPU and GPU tests), compute-sanitizer on the hand-written kernels, a short gpt_small
# training run on CUDA, and the benchmarks (bench_step at B=16 and 32, bench_attention,
# bench_gemm, bench_xent). A summary is printed last; every log is packed into
# $OUT/logs.tgz (the device tool returns at most 8 files).
#   OUT=/tmp/out tools/gpu/run_all.sh            SKIP_TESTS=1 for benchmarks only, FULL_BENCH=0
#                                                 for the step, attention and GEMM benchmarks only,
#                                                 REPEATS=N for N bench_step runs per batch size,
#                                                 AB="VAR=value ..." for the A/B runs (one each),
#                                                 MEMORY_BENCH=0 skips the checkpointing modes and
#                                                 the 1B-class configs
# The training run reads data/ (tools/fetch_data.sh --prepare here; the GPU host has no
# network): carry it along. The host also lacks the PCRE2 and zlib headers: run
# tools/gpu/host_deps.sh here once and carry .gpu-deps too.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
B=${BUILD_DIR:-build-gpu}
. tools/gpu/host_env.sh
summary=()
note() { summary+=("$*"); echo "== $*"; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader
t0=$(date +%s)
{ cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 "${CMAKE_DEPS[@]}" &&
  ninja -C "$B" -k 0 -j"$(nproc)"; } >"$OUT/build.log" 2>&1 || { grep -E "error" -A3 "$OUT/build.log" | head -40; }
note "build $(( $(date +%s) - t0 )) s"

if [ "${SKIP_TESTS:-0}" != 1 ]; then
  t0=$(date +%s)
  ctest --test-dir "$B" -j8 --timeout 300 --output-on-failure >"$OUT/ctest.log" 2>&1
  note "ctest rc=$? $(( $(date +%s) - t0 )) s: $(grep -E 'tests passed' "$OUT/ctest.log")"
  grep -E "\(Failed\)|\(Timeout\)|\(SEGFAULT\)|Exception" "$OUT/ctest.log" | head -20
  rows=BackendOps/Case.CudaMatchesCpu
  timeout 200 compute-sanitizer --tool memcheck "$B/tests/backend_ops_test" \
    --gtest_filter="$rows/self_attention*:$rows/layernorm*:$rows/gelu*:$rows/embedding*:$rows/mlp*" >"$OUT/memcheck_ops.log" 2>&1
  note "memcheck ops rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_ops.log")"
  timeout 200 compute-sanitizer --tool memcheck "$B/tests/ops_cuda_test" --gtest_filter='OpsCuda.Embedding*:OpsCuda.Mlp*' \
    >"$OUT/memcheck_ops_checks.log" 2>&1
  note "memcheck ops checks rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_ops_checks.log")"
  timeout 200 compute-sanitizer --tool memcheck "$B/tests/tensor_cuda_test" --gtest_filter='TensorCuda.WidenMany*' \
    >"$OUT/memcheck_widen.log" 2>&1
  note "memcheck widen rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_widen.log")"
  timeout 200 compute-sanitizer --tool racecheck "$B/tests/backend_ops_test" --gtest_filter="$rows/self_attention*" \
    >"$OUT/racecheck_attention.log" 2>&1
  note "racecheck attention rc=$? $(grep -E 'RACECHECK SUMMARY' "$OUT/racecheck_attention.log")"
  timeout 200 compute-sanitizer --tool memcheck "$B/tests/cross_entropy_cuda_test" \
    --gtest_filter='CrossEntropyCuda.Padded*:CrossEntropyCuda.TargetInThePadding*:CrossEntropyCuda.VocabParallel*' \
    >"$OUT/memcheck_xent.log" 2>&1
  note "memcheck xent rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_xent.log")"
  timeout 200 compute-sanitizer --tool memcheck "$B/tests/attention_cudnn_test" >"$OUT/memcheck_cudnn.log" 2>&1
  note "memcheck cudnn attention rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_cudnn.log")"
  t0=$(date +%s)
  "$B/bin/train" --config configs/gpt_small.yaml --set train.device=cuda --set train.max_steps=30 \
    --set train.grad_accum=1 --set log.out_dir=/tmp/gpt_small_gpu --set log.eval_every=15 --set log.eval_batches=2 \
    --set log.log_every=5 --set log.checkpoint_every=0 >"$OUT/train_gpu.log" 2>&1
  note "train gpt_small cuda rc=$? $(( $(date +%s) - t0 )) s: $(grep -E 'step +30|val' "$OUT/train_gpu.log" | tail -2 | tr '\n' ' ')"
  cp /tmp/gpt_small_gpu/metrics.jsonl "$OUT/train_gpu_metrics.jsonl" 2>/dev/null
  # The first steps at B=4 on one batch per step, to set beside the same run on the CPU
  # (train.device=cpu, same seed): issue 7's loss-curve check.
  "$B/bin/train" --config configs/gpt_small.yaml --set train.device=cuda --set train.batch_size=4 \
    --set train.grad_accum=1 --set train.max_steps=6 --set log.log_every=1 --set log.eval_every=0 \
    --set log.checkpoint_every=0 --set log.out_dir=/tmp/gpt_small_curve >"$OUT/train_gpu_curve.log" 2>&1
  note "train gpt_small cuda B=4 x 6 steps rc=$?"
  cp /tmp/gpt_small_curve/metrics.jsonl "$OUT/train_gpu_curve_metrics.jsonl" 2>/dev/null
fi

for bs in 16 32; do
  timeout 200 "$B/bin/bench_step" --batch-size $bs --steps 30 --warmup 5 --profile --profile-steps 2 \
    --out "$OUT/bench_step_b$bs.json" >"$OUT/bench_step_b$bs.log" 2>&1
  note "bench_step B=$bs rc=$?: $(grep -E '^step|^tokens/s' "$OUT/bench_step_b$bs.log" | tr '\n' ' ')"
  for rep in $(seq 2 "${REPEATS:-1}"); do  # REPEATS=N: N runs of the default configuration
    timeout 200 "$B/bin/bench_step" --batch-size $bs --steps 30 --warmup 5 >"$OUT/bench_step_b${bs}_run$rep.log" 2>&1
    note "bench_step B=$bs run $rep rc=$?: $(grep -E '^step|^tokens/s' "$OUT/bench_step_b${bs}_run$rep.log" | tr '\n' ' ')"
  done
  # The same step on the Brown shards through train's loader (real text repeats tokens; the
  # embedding gradient sums each row's run of them): within 0.5% of random tokens on an H100.
  timeout 200 "$B/bin/bench_step" --batch-size $bs --steps 30 --warmup 5 --data --profile --profile-steps 2 \
    >"$OUT/bench_step_b${bs}_data.log" 2>&1
  note "bench_step B=$bs --data rc=$?: $(grep -E '^step|^tokens/s|bwd/embedding' "$OUT/bench_step_b${bs}_data.log" | tr '\n' ' ')"
  # Every step a log step (the instability signals measured): their cost against the first run.
  timeout 200 "$B/bin/bench_step" --batch-size $bs --steps 30 --warmup 5 --signals >"$OUT/bench_step_b${bs}_signals.log" 2>&1
  note "bench_step B=$bs --signals rc=$?: $(grep -E '^step|^tokens/s' "$OUT/bench_step_b${bs}_signals.log" | tr '\n' ' ')"
  # A/B runs, one per VAR=value in $AB (default: the MLP without its GELU epilogues).
  for ab in ${AB-ZT_MLP_EPILOGUES=0}; do
    env "$ab" timeout 200 "$B/bin/bench_step" --batch-size $bs --steps 30 --warmup 5 \
      >"$OUT/bench_step_b${bs}_${ab%%=*}.log" 2>&1
    note "bench_step B=$bs $ab rc=$?: $(grep -E '^step|^tokens/s' "$OUT/bench_step_b${bs}_${ab%%=*}.log" | tr '\n' ' ')"
  done
done
# Issue 24: step time and peak memory per activation-checkpointing mode beside train's estimate,
# and the 1B-class configs on one card at their batch (gpt_xl recomputes its blocks).
if [ "${MEMORY_BENCH:-1}" = 1 ]; then
  for mode in none block mlp; do
    timeout 200 "$B/bin/bench_step" --batch-size 16 --steps 20 --warmup 5 --set train.activation_checkpointing=$mode \
      --out "$OUT/bench_step_ckpt_$mode.json" >"$OUT/bench_step_ckpt_$mode.log" 2>&1
    note "bench_step B=16 activation_checkpointing=$mode rc=$?: $(grep -E '^tokens/s|^memory' "$OUT/bench_step_ckpt_$mode.log" | tr '\n' ' ')"
  done
  for cfg in gpt_xl llama_1b; do
    timeout 300 "$B/bin/bench_step" --config configs/$cfg.yaml --batch-size 8 --steps 10 --warmup 3 \
      --out "$OUT/bench_step_$cfg.json" >"$OUT/bench_step_$cfg.log" 2>&1
    note "bench_step $cfg B=8 rc=$?: $(grep -E '^tokens/s|^memory' "$OUT/bench_step_$cfg.log" | tr '\n' ' ')"
  done
fi
timeout 120 "$B/bin/bench_attention" >"$OUT/bench_attention.log" 2>&1
timeout 200 "$B/bin/bench_gemm" --out "$OUT/bench_gemm.json" >"$OUT/bench_gemm.log" 2>&1
note "bench_gemm rc=$?"
if [ "${FULL_BENCH:-1}" = 1 ]; then  # FULL_BENCH=0 skips the unfused attention and bench_xent
  timeout 120 "$B/bin/bench_attention" --backends unfused --reps 5 >"$OUT/bench_attention_unfused.log" 2>&1
  timeout 200 "$B/bin/bench_xent" --device cuda >"$OUT/bench_xent.log" 2>&1
  note "bench_xent rc=$?"
fi

echo
echo "==================== summary ===================="
printf '%s\n' "${summary[@]}"
echo "--- bench_step B=16"; sed -n '1,60p' "$OUT/bench_step_b16.log"
echo "--- bench_attention (fused)"; cat "$OUT/bench_attention.log"
[ -f "$OUT/bench_attention_unfused.log" ] && { echo "--- bench_attention (unfused)"; tail -4 "$OUT/bench_attention_unfused.log"; }
echo "--- bench_gemm"; tail -5 "$OUT/bench_gemm.log"
[ -f "$OUT/bench_xent.log" ] && { echo "--- bench_xent"; tail -8 "$OUT/bench_xent.log"; }
(cd "$OUT" && tar czf logs.tgz ./*.log ./*.json ./*.jsonl 2>/dev/null;
  find . -maxdepth 1 -type f ! -name logs.tgz ! -name 'bench_step_b16.log' ! -name 'bench_step_b32.log' \
    ! -name 'bench_gemm.log' ! -name 'bench_attention.log' -delete)
true
