#!/usr/bin/env bash
# The README's train command: on a fresh machine it installs packages, builds, fetches the
# GPT-2 vocabulary and the Brown corpus and prepares its shards (each step skipped when
# done), then runs build/bin/train with the arguments given, e.g.
#   bash tools/train.sh --config configs/gpt_tiny.yaml [--set train.max_steps=100] [--resume]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/build.sh train prepare_data  # only what training needs; tools/test.sh builds the rest
bash tools/fetch_data.sh --prepare "${BUILD_DIR:-build}/bin"
exec "${BUILD_DIR:-build}/bin/train" "$@"
