#!/usr/bin/env bash
# The README's test command: on a fresh machine it installs packages, builds, fetches every
# tokenizer's vocabulary (and the npm packages whose JavaScript encoders the tokenizer tests
# compare against, ~17 MB) and the Brown corpus the data tests read (and prepares its shards),
# then runs every test through ctest. Each step skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/build.sh
bash tools/fetch_data.sh --tokenizers all --prepare "${BUILD_DIR:-build}/bin"
build=${BUILD_DIR:-build}
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" "$@"
