#!/usr/bin/env bash
# Runs GAIE v1.5.0's own metrics extractor on a Modelyard pod's /metrics text:
#   tools/gaie/probe.sh METRICS_FILE   -> a line "MODELYARD_METRICS {json}" (see modelyard_probe_test.go)
# The module's source is copied once per machine into the cache (as build.sh fetches it); the
# first run compiles the package's test dependencies (about 5 minutes on one shared core).
set -euo pipefail

EPP_VERSION=${EPP_VERSION:-v1.5.0}
export PATH="/usr/local/go/bin:$PATH"
CACHE=${MODELYARD_CACHE:-$HOME/.cache/modelyard}
SRC="$CACHE/gaie/src-$EPP_VERSION"
HERE=$(cd "$(dirname "$0")" && pwd)
export GOFLAGS="-p=1 -buildvcs=false ${GOFLAGS:-}" CGO_ENABLED=0 GOTOOLCHAIN=local GOWORK=off

if [ ! -f "$SRC/go.mod" ]; then
    MODULE=sigs.k8s.io/gateway-api-inference-extension
    DIR=$(go mod download -json "$MODULE@$EPP_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    [ -d "$DIR" ] || { echo "no module folder for $MODULE@$EPP_VERSION" >&2; exit 1; }
    mkdir -p "$CACHE/gaie"
    TMP=$(mktemp -d "$CACHE/gaie/src.XXXXXX")
    cp -r "$DIR/." "$TMP"
    chmod -R u+w "$TMP"
    mv "$TMP" "$SRC"
fi
PKG=pkg/epp/framework/plugins/datalayer/extractor/metrics
cp "$HERE/modelyard_probe_test.go" "$SRC/$PKG/"
cd "$SRC"
MODELYARD_METRICS_FILE=$(realpath "$1") nice -n 19 go test -count=1 -run '^TestModelyardProbe$' -v "./$PKG"
