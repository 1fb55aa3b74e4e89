#!/bin/sh
# Fetch and unpack llama-cpp-python's source distribution into .cache/llama-cpp-python/.
# Tests take real tokenizer vocabularies (vendor/llama.cpp/models/ggml-vocab-*.gguf) and
# convert_hf_to_gguf.py from it; the benchmark builds llama-server from its vendored llama.cpp.
# Idempotent: does nothing when the tree is already there.
set -eu
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
DEST="$ROOT/.cache/llama-cpp-python"
if [ -f "$DEST/.version" ] && [ "$(cat "$DEST/.version")" = "$VERSION" ]; then
    exit 0
fi
mkdir -p "$ROOT/.cache/sdist"
if [ ! -f "$ROOT/.cache/sdist/llama_cpp_python-$VERSION.tar.gz" ]; then
    "$PY" -m pip download --quiet --no-binary :all: --no-deps \
        "llama-cpp-python==$VERSION" -d "$ROOT/.cache/sdist"
fi
rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp"
tar -xzf "$ROOT/.cache/sdist/llama_cpp_python-$VERSION.tar.gz" -C "$DEST.tmp" --strip-components=1
echo "$VERSION" > "$DEST.tmp/.version"
rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
echo "llama-cpp-python $VERSION source in $DEST"
