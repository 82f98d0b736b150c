#!/usr/bin/env bash
# The GPU host has no network and lacks two development packages the build needs (PCRE2 and
# zlib headers). Run this HERE, on a Debian machine with network: it downloads their .deb files
# and unpacks headers and libraries into .gpu-deps/ (git-ignored), with real files instead of
# links. Carry .gpu-deps to the GPU host; tools/gpu/run_all.sh then points CMake at it.
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=$PWD/.gpu-deps
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download libpcre2-dev libpcre2-8-0 zlib1g-dev zlib1g >/dev/null)
rm -rf "$dest"
for f in "$tmp"/*.deb; do dpkg -x "$f" "$tmp/root"; done
mkdir -p "$dest/include" "$dest/lib"
cp "$tmp"/root/usr/include/{pcre2.h,zlib.h,zconf.h} "$dest/include/"
for lib in libpcre2-8.so.0 libz.so.1; do
  src=$(find "$tmp/root" -name "$lib" | head -1)
  cp -L "$src" "$dest/lib/$lib"
  ln -sf "$lib" "$dest/lib/${lib%.[01]}"  # the unversioned name the linker looks for
done
echo "host_deps: $(ls "$dest/include" "$dest/lib" | tr '\n' ' ')-> carry .gpu-deps"
