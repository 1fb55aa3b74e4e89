#!/usr/bin/env bash
# Builds the Gateway API Inference Extension's endpoint picker (EPP) for the gateway tests:
# sigs.k8s.io/gateway-api-inference-extension/cmd/epp at v1.5.0, the last release that has
# it (later ones moved it to llm-d's router). Once per machine, into a cache outside the
# checkout; a second run with the same version does nothing. Not part of `make test`.
#
#   tools/gaie/build.sh          build when missing, print the binary's path
#   tools/gaie/build.sh --print  print the path only
#
# `go install ...@v1.5.0` fails here: the module proxy answers 403 for the module's version
# list (which go install reads for deprecations), while the version's own zip downloads.
# So the module's source is fetched with `go mod download` and built in a copy of it, with
# its own go.mod and go.sum (no replace directives) and without its go.work (it names a
# conformance module the zip does not hold).
#
# Loopback only: the EPP listens on ":port" (every interface) for ext_proc, its gRPC health
# service and its metrics, with no flag for the address. The tests run it on a machine that
# must not serve beyond loopback, so the build binds those three listeners to 127.0.0.1
# (two lines, checked below so that another version fails here rather than listens widely);
# nothing else of the picker changes. Hence the binary's name, epp-<version>-loopback.
set -euo pipefail

EPP_VERSION=${EPP_VERSION:-v1.5.0}
export PATH="/usr/local/go/bin:$PATH"
CACHE=${MODELYARD_CACHE:-$HOME/.cache/modelyard}
OUT="$CACHE/gaie/epp-$EPP_VERSION-loopback"

if [ "${1:-}" = "--print" ]; then echo "$OUT"; exit 0; fi
if [ -x "$OUT" ]; then echo "$OUT"; exit 0; fi

# Two shared cores: one compile job at a time, at low priority; no debug info.
export GOFLAGS="-p=1 -trimpath -buildvcs=false ${GOFLAGS:-}"
export CGO_ENABLED=0 GOTOOLCHAIN=local GOWORK=off

MODULE=sigs.k8s.io/gateway-api-inference-extension
DIR=$(go mod download -json "$MODULE@$EPP_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -d "$DIR" ] || { echo "no module folder for $MODULE@$EPP_VERSION" >&2; exit 1; }
mkdir -p "$CACHE/gaie"
WORK=$(mktemp -d "$CACHE/gaie/build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cp -r "$DIR/." "$WORK/src"
chmod -R u+w "$WORK/src"
bind_loopback() {  # file: every `":%d"` listen address becomes "127.0.0.1:%d", or fail
    grep -q 'Sprintf(":%d"' "$WORK/src/$1" || { echo "no listen address to bind in $1" >&2; exit 1; }
    sed -i 's/Sprintf(":%d"/Sprintf("127.0.0.1:%d"/' "$WORK/src/$1"
}
bind_loopback internal/runnable/grpc.go     # ext_proc and gRPC health
bind_loopback cmd/epp/runner/runner.go      # metrics (and pprof on the same server)
(cd "$WORK/src" && nice -n 19 go build -ldflags "-s -w" -o "$WORK/epp" ./cmd/epp)
mv "$WORK/epp" "$OUT"  # whole or absent
echo "$OUT"
