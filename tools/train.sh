#!/usr/bin/env bash
# The README's train command: on a fresh machine it installs packages, builds, fetches the
# GPT-2 vocabulary and the Brown corpus and prepares its shards (each step skipped when
# done), then runs build/bin/train with the arguments given, e.g.
#   bash tools/train.sh --config configs/gpt_tiny.yaml [--set train.max_steps=100] [--resume]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/build.sh train prepare_data  # only what training needs; tools/test.sh builds the rest
# The tokenizer the config's shards are made with (data.tokenizer; gpt2 when it names none).
tokenizer=gpt2
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  if [[ ${args[i]} == --config && -f ${args[i+1]:-} ]]; then
    t=$(sed -n 's/^[[:space:]]*tokenizer:[[:space:]]*\([a-z0-9]*\).*/\1/p' "${args[i+1]}" | head -1)
    [[ -n $t ]] && tokenizer=$t
  fi
done
bash tools/fetch_data.sh --tokenizers "gpt2,$tokenizer" --prepare "${BUILD_DIR:-build}/bin"
exec "${BUILD_DIR:-build}/bin/train" "$@"
