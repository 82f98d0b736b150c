#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/<name>_fuzz.cpp: clang, ASan, UBSan) and runs each
# for a bounded time, starting from its seed corpus tests/fuzz/corpus/<name>/.
#
#   bash tools/fuzz.sh                          every target, 20 s each
#   FUZZ_SECONDS=300 bash tools/fuzz.sh npy     one target, longer
#
# BUILD_DIR (default build-fuzz) may be a build configured with ZTRAIN_FUZZ=ON already (CI
# reuses its sanitizer build). New corpus entries go to BUILD_DIR/fuzz/corpus/<name>, never
# into the tree. A finding stops the script with the input saved as
# BUILD_DIR/fuzz/findings/<name>/crash-* (or leak-*, oom-*, timeout-*): turn it into a
# regression test, and add it to the seed corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-20}
build=${BUILD_DIR:-build-fuzz}
if [ $# -gt 0 ]; then
  names=("$@")
else
  names=()
  for f in tests/fuzz/*_fuzz.cpp; do n=$(basename "$f" _fuzz.cpp); names+=("$n"); done
fi
targets=()
for n in "${names[@]}"; do targets+=("${n}_fuzz"); done
ZTRAIN_CUDA=OFF ZTRAIN_FUZZ=ON BUILD_DIR="$build" bash tools/build.sh "${targets[@]}"

for n in "${names[@]}"; do
  corpus="$build/fuzz/corpus/$n" findings="$build/fuzz/findings/$n" log="$build/fuzz/$n.log"
  mkdir -p "$corpus" "$findings"
  # -rss_limit_mb also caps single allocations: an unchecked size read from the input shows
  # up as an out-of-memory finding instead of passing unnoticed.
  if "$build/fuzz/${n}_fuzz" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
       -print_final_stats=1 -artifact_prefix="$findings/" "$corpus" "tests/fuzz/corpus/$n" >"$log" 2>&1; then
    echo "fuzz: $n: $(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$') runs in ${seconds} s, no findings"
  else
    tail -n 40 "$log"
    echo "fuzz: $n: FINDING (log $log, input under $findings/)" >&2
    exit 1
  fi
done
