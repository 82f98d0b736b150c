# Sourced by the tools/gpu/*.sh scripts on the GPU host: CUDA on PATH, NVLink multicast off,
# and CMAKE_DEPS (an array of CMake arguments) pointing at .gpu-deps when it was carried
# (tools/gpu/host_deps.sh: the PCRE2 and zlib headers the host lacks).
export NCCL_NVLS_ENABLE=0
[ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"
CMAKE_DEPS=()
if [ -d .gpu-deps ]; then
  CMAKE_DEPS=(-DCMAKE_PREFIX_PATH="$PWD/.gpu-deps")
  export LD_LIBRARY_PATH="$PWD/.gpu-deps/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
