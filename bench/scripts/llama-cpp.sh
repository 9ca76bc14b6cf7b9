#!/usr/bin/env bash
# Builds the llama.cpp that llama-cpp-python==0.3.36 vendors (the peer Chorus's benchmarks are
# set beside) and prints the directory holding llama-server, llama-bench and llama-batched-bench.
# The source comes from the package registry with the standard client; the build is cached in
# $CHORUS_BENCH_DIR (default: ~/.cache/chorus/bench), so a second run prints the path at once.
set -euo pipefail
ver=0.3.36
root=${CHORUS_BENCH_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/chorus/bench}
dir=$root/llama-cpp-python-$ver
bin=$dir/build/bin
targets=(llama-server llama-bench llama-batched-bench)
ready() { for t in "${targets[@]}"; do [[ -x $bin/$t ]] || return 1; done; }
if ready; then echo "$bin"; exit 0; fi
mkdir -p "$dir"
cd "$dir"
if [[ ! -f src/CMakeLists.txt ]]; then
  python3 -m pip download --no-deps --no-binary llama-cpp-python "llama-cpp-python==$ver" -d . >&2
  rm -rf unpack && mkdir unpack && tar xzf "llama_cpp_python-$ver.tar.gz" -C unpack
  rm -rf src && mv "unpack/llama_cpp_python-$ver/vendor/llama.cpp" src && rm -rf unpack
fi
# cmake and ninja from the package registry, in a venv of their own, when the machine lacks them.
if ! command -v cmake >/dev/null || ! command -v ninja >/dev/null; then
  [[ -x venv/bin/cmake ]] || { python3 -m venv venv && venv/bin/pip install --quiet cmake ninja >&2; }
  export PATH=$dir/venv/bin:$PATH
fi
cmake -S src -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DBUILD_SHARED_LIBS=OFF >&2
cmake --build build -j "$(nproc)" --target "${targets[@]}" >&2
ready || { echo "llama-cpp.sh: build finished without ${targets[*]} in $bin" >&2; exit 1; }
echo "$bin"
