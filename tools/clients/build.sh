#!/usr/bin/env bash
# Builds the Go program that drives Ollama's own Go client in the tests
# (tests/clients/ollama_go). Once per machine: the binary goes to a cache outside the
# checkout, in a folder named after the hash of its sources (go.mod pins the ollama
# version), and a second run with the same sources does nothing.
#
#   tools/clients/build.sh          build when missing, print the binary's path
#   tools/clients/build.sh --print  print the path only
#
# Only the Go module proxy is needed.
set -euo pipefail

HERE=$(cd "$(dirname "$0")/../.." && pwd)
SRC="$HERE/tests/clients/ollama_go"
export PATH="/usr/local/go/bin:$PATH"
CACHE=${MODELYARD_CACHE:-$HOME/.cache/modelyard}
SUM=$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC"/*.go | sha256sum | cut -c1-16)
OUT="$CACHE/clients/ollama-go-$SUM/ollama-go-client"

if [ "${1:-}" = "--print" ]; then echo "$OUT"; exit 0; fi
if [ -x "$OUT" ]; then echo "$OUT"; exit 0; fi

mkdir -p "$(dirname "$OUT")"
cd "$SRC"
# -mod=mod: go.sum is checked in, and the module cache fills from the proxy.
GOFLAGS="-mod=mod -p=2 -trimpath -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN=local \
    go build -ldflags="-s -w" -o "$OUT.tmp" . >&2
mv "$OUT.tmp" "$OUT"
echo "$OUT"
