#!/usr/bin/env bash
# Build llama.cpp's benchmark tools (llama-batched-bench, llama-quantize, llama-simple) from the source
# vendored in the llama-cpp-python sdist, for benchmarks/vs_llamacpp.py. A benchmark-only tool: nothing in
# swarm uses it. Needs cmake and a C++ compiler; about 10 minutes on 2 cores.
#
#   bash benchmarks/build_llamacpp.sh              # -> .llamacpp/build/bin/
#   LLAMA_CPP_PYTHON=0.3.36 bash benchmarks/build_llamacpp.sh /elsewhere
set -euo pipefail
cd "$(dirname "$0")/.."
version=${LLAMA_CPP_PYTHON:-0.3.36}
dest=${1:-.llamacpp}
python=${PYTHON:-.venv/bin/python}
mkdir -p "$dest"
if [ ! -f "$dest/src/CMakeLists.txt" ]; then
    "$python" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$dest"
    tar xzf "$dest/llama_cpp_python-$version.tar.gz" -C "$dest"
    rm -rf "$dest/src"
    mv "$dest/llama_cpp_python-$version/vendor/llama.cpp" "$dest/src"
    rm -rf "$dest/llama_cpp_python-$version" "$dest/llama_cpp_python-$version.tar.gz"
fi
cmake -S "$dest/src" -B "$dest/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_CCACHE=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
cmake --build "$dest/build" -j "$(nproc)" --target llama-batched-bench llama-quantize llama-simple
echo "llama.cpp $version tools in $dest/build/bin"
