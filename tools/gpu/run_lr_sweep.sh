#!/usr/bin/env bash
# Issue 25's reproduced result on one GPU: the learning-rate x z-loss study of Wortsman et al.
# 2023 on configs/lr_sweep_gpt.yaml (z-loss 0 / 1e-4) and lr_sweep_llama.yaml (z-loss x QK-norm),
# learning rates 1e-3 .. 3e-1, 2 seeds, JOBS runs at once on GPU 0; first the throughput of one
# run alone against 4 and 8 at once (tokens/s from train's metrics).
#   OUT=/tmp/out tools/gpu/run_lr_sweep.sh   STEPS=N (1000), JOBS=N (8), SEEDS=N (2),
#                                            SWEEPS="gpt llama" (which studies), TPUT=0 (skip
#                                            the throughput runs; TPUT_NS="4 8": how many at once),
#                                            DEADLINE=S (stop the sweeps S seconds after
#                                            the start; default 540)
# The study outlasts one device call, so it is resumable across calls: the ablations live under
# runs/sweeps/ (SWEEP_DIR), every run directory except its checkpoints comes back under
# $OUT/sweeps/, and carrying that folder back as runs/sweeps makes the next call skip the
# finished runs (ablate's done markers) and start the interrupted ones over.
# Carry data/ (the Brown shards, GPT-2 tokenizer) and .gpu-deps, as for run_all.sh.
set -uo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
B=${BUILD_DIR:-build-gpu}
STEPS=${STEPS:-1000}
JOBS=${JOBS:-8}
SEEDS=${SEEDS:-2}
DEADLINE=${DEADLINE:-540}
SWEEP_DIR=${SWEEP_DIR:-$PWD/runs/sweeps}
LRS=${LRS:-1e-3,3e-3,1e-2,3e-2,1e-1,3e-1}
. tools/gpu/host_env.sh
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader
t0=$(date +%s)
{ cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 "${CMAKE_DEPS[@]}" &&
  ninja -C "$B" -j"$(nproc)" train ablate; } >"$OUT/build.log" 2>&1 || { grep -E "error" -A3 "$OUT/build.log" | head -40; exit 1; }
echo "== build $(( $(date +%s) - t0 )) s"

if [ "${TPUT:-1}" = 1 ]; then
  # Throughput: one run alone, then 4 and 8 copies at once (the same config, other out dirs);
  # each run's rate is the median of its second half of logged steps.
  tps() { python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if '\"tokens_per_s\"' in l]; v=sorted(x['tokens_per_s'] for x in r[len(r)//2:]); print(v[len(v)//2] if v else 0)" "$1"; }
  run() { "$B/bin/train" --config configs/lr_sweep_gpt.yaml --set train.device=cuda:0 --set train.max_steps=300 \
            --set log.eval_every=0 --set log.out_dir="/tmp/tput_$1" --overwrite >"$OUT/tput_$1.log" 2>&1; }
  run alone
  echo "== throughput lr_sweep_gpt: one run alone $(tps /tmp/tput_alone/metrics.jsonl) tokens/s"
  for n in ${TPUT_NS:-4 8}; do
    t0=$(date +%s.%N)
    for k in $(seq 1 $n); do run "n${n}_$k" & done
    wait
    rates=$(for k in $(seq 1 $n); do tps "/tmp/tput_n${n}_$k/metrics.jsonl"; done | tr '\n' ' ')
    echo "== throughput lr_sweep_gpt: $n at once, per run: $rates; in all $(python3 -c "print(round(sum(map(float,'$rates'.split()))))") tokens/s; wall $(python3 -c "print(round($(date +%s.%N)-$t0,1))") s"
  done
  nvidia-smi --query-gpu=clocks.sm,power.draw,temperature.gpu --format=csv,noheader
fi

for family in ${SWEEPS:-gpt llama}; do
  left=$(( DEADLINE - ($(date +%s) - start) ))
  [ "$left" -le 20 ] && { echo "== ablate $family: no time left this call"; continue; }
  extra=()
  [ "$family" = llama ] && extra=(--sweep model.qk_norm=false,true)
  dir="$SWEEP_DIR/lr_sweep_$family"
  t0=$(date +%s)
  # SIGINT: ablate stops its trains and keeps the finished runs (rerun to resume).
  timeout --signal=INT --kill-after=30 "$left" "$B/bin/ablate" --config "configs/lr_sweep_$family.yaml" \
    --sweep optim.lr="$LRS" --sweep loss.z_loss_weight=0,1e-4 "${extra[@]}" --seeds "$SEEDS" --jobs "$JOBS" \
    --devices 0 --out "$dir" --set train.max_steps="$STEPS" >>"$OUT/ablate_$family.log" 2>&1
  rc=$?
  echo "== ablate $family rc=$rc $(( $(date +%s) - t0 )) s: $(ls "$dir"/*/ablate.done 2>/dev/null | wc -l) finished, $(ls "$dir"/*/ablate.diverged 2>/dev/null | wc -l) diverged"
  tail -3 "$OUT/ablate_$family.log"
  sed -n '/## Learning-rate sensitivity/,$p' "$dir/summary.md" 2>/dev/null | head -24
  # Everything but the checkpoints comes back (after each study, in case the call is cut
  # short), to be carried into the next call.
  (cd "$(dirname "$SWEEP_DIR")" && tar czf "$OUT/sweeps.tgz" --exclude='*.ckpt' --exclude='*.ckpt.*' \
     "$(basename "$SWEEP_DIR")" 2>/dev/null)
done
true
