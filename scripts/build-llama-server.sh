#!/usr/bin/env bash
# Build llama.cpp's llama-server (with llama-bench and llama-batched-bench) from the llama.cpp tree
# vendored in the pinned llama-cpp-python sdist, into OUT: the binaries and their shared libraries,
# the CPU kernels among them, side by side. Used by `make install` and by the Space's Dockerfile.
#
#   scripts/build-llama-server.sh SDIST.tar.gz OUT
#
# Runtime CPU dispatch instead of one instruction set (GGML_BACKEND_DL, GGML_CPU_ALL_VARIANTS): the
# kernels are built for three x86 levels (x64 floor, haswell = AVX2, icelake = AVX-512 VBMI/VNNI)
# and each machine loads the best it supports. All 13 of llama.cpp's x86 variants would take three
# times as long to build; the ones left out fall back to the nearest level below, and none uses AMX
# (whose native build crashed on another CPU). No web UI, no download of a prebuilt one, no OpenSSL.
set -euo pipefail
sdist=$(realpath "$1")
out=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
top=$(basename "$sdist" .tar.gz)  # the sdist's top folder, as pip names it
tar -xzf "$sdist" -C "$work/src" --strip-components=3 "$top/vendor/llama.cpp"
sed -i -E '/ggml_add_cpu_backend_variant\((sse42|sandybridge|ivybridge|piledriver|skylakex|cannonlake|cascadelake|cooperlake|zen4|alderlake|sapphirerapids) /d' \
    "$work/src/ggml/src/CMakeLists.txt"
# cmake and ninja from PyPI, so that the machine needs only a C++ compiler
python3 -m venv "$work/tools"
"$work/tools/bin/pip" install -q cmake ninja
export PATH="$work/tools/bin:$PATH"
# no run path into the build folder, which is deleted: rqa starts the server with LD_LIBRARY_PATH set
cmake -S "$work/src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON -DCMAKE_SKIP_BUILD_RPATH=ON \
    -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DGGML_NATIVE=OFF -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON >/dev/null
ninja -C "$work/build" llama-server llama-bench llama-batched-bench
mkdir -p "$out"
cp -a "$work/build/bin/llama-server" "$work/build/bin/llama-bench" "$work/build/bin/llama-batched-bench" \
    "$work/build/bin/"*.so* "$out/"
echo "llama-server -> $out"
