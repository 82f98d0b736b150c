#!/usr/bin/env bash
# Issue 25's reproduced result on one GPU, in one call: the learning-rate x z-loss study of
# Wortsman et al. 2023 on configs/lr_sweep_gpt.yaml (z-loss 0 / 1e-4) and lr_sweep_llama.yaml
# (z-loss x QK-norm), learning rates 1e-3 .. 3e-1, 2 seeds, JOBS runs at once on GPU 0; then
# the throughput of one run alone against JOBS at once (tokens/s from train's metrics). Each
# ablation's summary.md, lr_sensitivity.json and plots come back under $OUT/<family>/ (small
# PNGs); every train log is packed into $OUT/logs.tgz.
#   OUT=/tmp/out tools/gpu/run_lr_sweep.sh     STEPS=N (default 1000), JOBS=N (default 4),
#                                              SWEEPS="gpt llama" (which studies), SEEDS=N
# Carry data/ (the Brown shards, GPT-2 tokenizer) and .gpu-deps, as for run_all.sh.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
B=${BUILD_DIR:-build-gpu}
STEPS=${STEPS:-1000}
JOBS=${JOBS:-4}
SEEDS=${SEEDS:-2}
LRS=${LRS:-1e-3,3e-3,1e-2,3e-2,1e-1,3e-1}
. tools/gpu/host_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
t0=$(date +%s)
{ cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 "${CMAKE_DEPS[@]}" &&
  ninja -C "$B" -j"$(nproc)" train ablate; } >"$OUT/build.log" 2>&1 || { grep -E "error" -A3 "$OUT/build.log" | head -40; exit 1; }
echo "== build $(( $(date +%s) - t0 )) s"

# Throughput: one run alone, then JOBS copies at once (the same config, other out dirs).
tps() { /usr/bin/env python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if '\"tokens_per_s\"' in l]; v=sorted(x['tokens_per_s'] for x in r[len(r)//2:]); print(v[len(v)//2] if v else 0)" "$1"; }
run() { "$B/bin/train" --config configs/lr_sweep_gpt.yaml --set train.device=cuda:0 --set train.max_steps=200 \
          --set log.eval_every=0 --set log.out_dir="/tmp/tput_$1" --overwrite >"$OUT/tput_$1.log" 2>&1; }
run alone
alone=$(tps /tmp/tput_alone/metrics.jsonl)
for k in $(seq 1 "$JOBS"); do run "par$k" & done
wait
total=0
for k in $(seq 1 "$JOBS"); do total=$(python3 -c "print($total + $(tps /tmp/tput_par$k/metrics.jsonl))"); done
echo "== throughput lr_sweep_gpt: one run ${alone} tokens/s; $JOBS at once ${total} tokens/s in all"

for family in ${SWEEPS:-gpt llama}; do
  extra=()
  [ "$family" = llama ] && extra=(--sweep model.qk_norm=false,true)
  t0=$(date +%s)
  "$B/bin/ablate" --config "configs/lr_sweep_$family.yaml" --sweep optim.lr="$LRS" --sweep loss.z_loss_weight=0,1e-4 \
    "${extra[@]}" --seeds "$SEEDS" --jobs "$JOBS" --devices 0 --out "/tmp/lr_sweep_$family" \
    --set train.max_steps="$STEPS" >"$OUT/ablate_$family.log" 2>&1
  echo "== ablate $family rc=$? $(( $(date +%s) - t0 )) s"
  mkdir -p "$OUT/$family"
  cp /tmp/lr_sweep_$family/{summary.md,summary.csv,lr_sensitivity.json,ablation.json} "$OUT/$family/" 2>/dev/null
  cp /tmp/lr_sweep_$family/plots/{final_loss_vs_lr,signals_diverged,combined_vs_step}.png "$OUT/$family/" 2>/dev/null
  sed -n '/## Learning-rate sensitivity/,$p' "/tmp/lr_sweep_$family/summary.md" | head -20
done
(cd /tmp && tar czf "$OUT/logs.tgz" lr_sweep_*/*/train.log lr_sweep_*/*/metrics.jsonl 2>/dev/null)
true
