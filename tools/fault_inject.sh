#!/usr/bin/env bash
# Fault injection: trains a tiny GPT on a synthetic token stream, kills the trainer with
# SIGKILL at random moments (during steps, evaluations and checkpoint writes), resumes after
# each kill, and checks that the final metrics.jsonl equals an uninterrupted run's (every
# field but the timing ones, bit for bit: the CPU path is deterministic).
#
#   bash tools/fault_inject.sh [--bin build/bin] [--kills 8] [--seconds 300] [--seed 1]
#
# Bounded: at most --kills kills and --seconds of wall time (then it fails). Exit 0 when the
# runs match. Needs python3 (writes the shards, compares the metrics).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/bin kills=8 seconds=300 seed=1
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --kills) kills=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    *) echo "fault_inject: unknown option $1 (options: --bin DIR --kills N --seconds S --seed R)" >&2; exit 2 ;;
  esac
done
[ -x "$bin/train" ] || { echo "fault_inject: no $bin/train (build it: bash tools/build.sh train)" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/ztrain_fault.XXXXXX")
trap 'rm -rf "$work"' EXIT
RANDOM=$seed
deadline=$((SECONDS + seconds))

# Token shards in llm.c's format: 256 int32 header (magic, version, count), uint16 ids.
python3 - "$work" <<'PY'
import struct, sys
def shard(path, n, mult):
    ids = [(3 + mult * i + (i * i) % 7) % 64 for i in range(n)]
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", 20240520, 1, n, *([0] * 253)))
        f.write(struct.pack("<%dH" % n, *ids))
shard(sys.argv[1] + "/train_000.bin", 40000, 5)
shard(sys.argv[1] + "/val_000.bin", 4000, 5)
PY
cat > "$work/tiny.yaml" <<YAML
model: {n_layer: 2, n_head: 2, d_model: 64, seq_len: 32, vocab_size: 64, vocab_multiple: 64, dropout: 0.1}
loss: {z_loss_weight: 1.0e-4, label_smoothing: 0.05}
optim: {lr: 3.0e-3, min_lr: 3.0e-4}
schedule: {warmup_steps: 10}
data: {train: $work/train_000.bin, val: $work/val_000.bin}
train: {batch_size: 8, grad_accum: 2, max_steps: 150, seed: 3, device: cpu, threads: 1}
log: {log_every: 50, eval_every: 25, eval_batches: 2, checkpoint_every: 10, keep_checkpoints: 2}
YAML

# exec: the background job's pid is the trainer's own, so kill -9 reaches the trainer.
train() { exec "$bin/train" --config "$work/tiny.yaml" --set "log.out_dir=$1" "${@:2}"; }

t0=$SECONDS
(train "$work/reference") > "$work/reference.log" 2>&1
full=$((SECONDS - t0))
echo "fault_inject: uninterrupted run took ${full}s"

run="$work/killed"
done_ok=0
for ((k = 1; k <= kills; k++)); do
  [ $SECONDS -lt $deadline ] || { echo "fault_inject: out of time (--seconds $seconds)" >&2; exit 1; }
  flags=()
  if ls "$run"/checkpoints/step_*.ckpt > /dev/null 2>&1; then flags=(--resume)
  elif [ -e "$run/metrics.jsonl" ]; then flags=(--overwrite); fi
  (train "$run" "${flags[@]}") > "$work/attempt_$k.log" 2>&1 &
  pid=$!
  # Somewhere in the run: 0 .. 0.6 x (the uninterrupted run's time + 1 s), in milliseconds.
  ms=$((RANDOM % ((full + 1) * 600 + 1)))
  sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
  if kill -9 "$pid" 2> /dev/null; then
    wait "$pid" 2> /dev/null || true
    echo "fault_inject: kill $k after ${ms} ms ($(ls "$run"/checkpoints 2> /dev/null | tr '\n' ' '))"
  else
    wait "$pid" || { echo "fault_inject: attempt $k failed:" >&2; cat "$work/attempt_$k.log" >&2; exit 1; }
    echo "fault_inject: attempt $k finished before its kill"
    done_ok=1
    break
  fi
done
if [ $done_ok = 0 ]; then
  flags=()
  if ls "$run"/checkpoints/step_*.ckpt > /dev/null 2>&1; then flags=(--resume)
  elif [ -e "$run/metrics.jsonl" ]; then flags=(--overwrite); fi
  (train "$run" "${flags[@]}") > "$work/final.log" 2>&1 || { echo "fault_inject: final resume failed:" >&2; cat "$work/final.log" >&2; exit 1; }
fi
if ls "$run"/checkpoints/*.tmp.* > /dev/null 2>&1; then
  echo "fault_inject: temp files left behind: $(ls "$run"/checkpoints/*.tmp.*)" >&2; exit 1
fi

python3 - "$work/reference/metrics.jsonl" "$run/metrics.jsonl" <<'PY'
import json, sys
timing = {"tokens_per_s", "elapsed_s", "mfu"}
def load(p):
    with open(p) as f:
        return [{k: v for k, v in json.loads(l).items() if k not in timing} for l in f]
a, b = load(sys.argv[1]), load(sys.argv[2])
if a != b:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            print("fault_inject: record %d differs:\n  uninterrupted %s\n  killed        %s" % (i, x, y), file=sys.stderr)
            break
    else:
        print("fault_inject: %d records vs %d" % (len(a), len(b)), file=sys.stderr)
    sys.exit(1)
print("fault_inject: %d records equal the uninterrupted run's" % len(a))
PY
