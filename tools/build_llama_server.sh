#!/bin/sh
# Build llama.cpp's llama-server (CPU) from the llama.cpp that llama-cpp-python's sdist
# vendors, into .cache/llama-server/. The benchmark compares Modelyard against it, so it is
# built the way the Makefile builds Modelyard's wheel: -march=native without ggml's AMX
# kernels (docs/engines.md says why).
set -eu
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
sh "$ROOT/tools/llama_sdist.sh"
SRC="$ROOT/.cache/llama-cpp-python/vendor/llama.cpp"
BUILD="$ROOT/.cache/llama-server-build"
OUT="$ROOT/.cache/llama-server"
[ -x "$OUT/llama-server" ] && exit 0
CMAKE="${CMAKE:-cmake}"
command -v "$CMAKE" >/dev/null || CMAKE="$ROOT/.venv/bin/cmake"
"$CMAKE" -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF \
    "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" \
    "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
"$CMAKE" --build "$BUILD" --target llama-server -j "${JOBS:-2}"
mkdir -p "$OUT"
cp "$BUILD/bin/llama-server" "$OUT/llama-server"
echo "built $OUT/llama-server"
