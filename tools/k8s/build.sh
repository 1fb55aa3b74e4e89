#!/usr/bin/env bash
# Builds the control plane that tests/cluster starts on loopback: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok, from their Go modules at pinned
# versions. Once per machine: the binaries go to a cache outside the checkout, in a
# folder named after the versions, and a second run with the same versions does nothing.
#
#   tools/k8s/build.sh          build when missing, print the folder
#   tools/k8s/build.sh --print  print the folder only
#
# Only the Go module proxy is needed (no release downloads). Build times and peak memory
# of each step go to build-times.txt in that folder.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}

export PATH="/usr/local/go/bin:$PATH"
CACHE=${MODELYARD_CACHE:-$HOME/.cache/modelyard}
OUT="$CACHE/k8s/kube-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
BINARIES="etcd kube-apiserver kube-controller-manager kube-scheduler kwok"

if [ "${1:-}" = "--print" ]; then echo "$OUT"; exit 0; fi

complete() {
    for b in $BINARIES; do [ -x "$OUT/$b" ] || return 1; done
}

# kwok simulates nothing without stages. The release's own stage files (nodes become
# Ready; pods become Ready, Job pods complete, deleted pods go; PVCs of the kwok-volume
# class are provisioned and bound) come from its module, the same version as the binary.
stages() {
    [ -s "$OUT/kwok-stages.yaml" ] && [ -s "$OUT/kwok-storage-class.yaml" ] && return 0
    local dir
    dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    [ -d "$dir" ] || { echo "no module folder for sigs.k8s.io/kwok@$KWOK_VERSION" >&2; exit 1; }
    local f tmp="$OUT/kwok-stages.yaml.tmp"
    : > "$tmp"
    for f in "$dir"/kustomize/stage/node/fast/node-initialize.yaml \
             "$dir"/kustomize/stage/pod/fast/pod-{ready,complete,delete}.yaml \
             "$dir"/kustomize/stage/volume/fast/{pv-bind,pv-delete,pvc-provision,pvc-delete}.yaml; do
        { echo "---"; cat "$f"; } >> "$tmp"
    done
    # The default StorageClass that those volume stages serve: created in the cluster.
    cp "$dir/kustomize/stage/volume/fast/storage-class.yaml" "$OUT/kwok-storage-class.yaml"
    mv "$tmp" "$OUT/kwok-stages.yaml"
}

if complete; then stages; echo "$OUT"; exit 0; fi

# Two cores, shared: two compile jobs at once, and no debug info or symbol tables
# (-s -w), which also makes the links of the large binaries much lighter.
# A -p in the caller's GOFLAGS comes later and wins.
export GOFLAGS="-p=2 -trimpath -buildvcs=false ${GOFLAGS:-}"
export CGO_ENABLED=0
export GOTOOLCHAIN=local

mkdir -p "$CACHE/k8s"
WORK=$(mktemp -d "$CACHE/k8s/build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
STAGE="$WORK/bin"
mkdir -p "$STAGE"
TIMES="$WORK/build-times.txt"

timed() {  # timed LABEL cmd...: wall time and peak RSS of one step, into build-times.txt
    local label=$1; shift
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -v -o "$WORK/time.$label" "$@"
        local wall rss
        wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$WORK/time.$label")
        rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/time.$label")
        echo "$label wall=$wall peak_rss_mib=$((rss / 1024))" | tee -a "$TIMES"
    else
        "$@"
    fi
}

# --- kubernetes -----------------------------------------------------------------------
# k8s.io/kubernetes replaces its staging modules (k8s.io/api, k8s.io/client-go, ...) with
# folders of its own tree, so `go install` of it fails. A wrapper module requires it and
# replaces each staging module with the release of the same minor: v1.36.3 -> v0.36.3.
# The list comes from the release's own go.mod, so it follows the release.
STAGING_VERSION="v0.${K8S_VERSION#v1.}"
KUBE_MOD=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
[ -f "$KUBE_MOD" ] || { echo "no go.mod for k8s.io/kubernetes@$K8S_VERSION" >&2; exit 1; }
KUBE_GO=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$KUBE_MOD")
STAGING=$(go mod edit -json "$KUBE_MOD" \
    | tr -d ' \t\n' | grep -o '"Old":{"Path":"[^"]*"},"New":{"Path":"\./staging/[^"]*"' \
    | sed 's/"Old":{"Path":"\([^"]*\)".*/\1/')
[ -n "$STAGING" ] || { echo "no staging replacements found in $KUBE_MOD" >&2; exit 1; }

KW="$WORK/kube"
mkdir -p "$KW"
(
    cd "$KW"
    go mod init modelyard.dev/k8s-build >/dev/null 2>&1
    go mod edit -go="$KUBE_GO" -require="k8s.io/kubernetes@$K8S_VERSION"
    for m in $STAGING; do go mod edit -replace="$m=$m@$STAGING_VERSION"; done
    go mod edit -fmt
)
cp "$KW/go.mod" "$WORK/kube-wrapper.go.mod"

KUBE_CMDS="k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler"
# The same variables as Kubernetes' own release build sets, so --version and
# /version report the release, not v0.0.0-master.
MAJOR=${K8S_VERSION#v}; MAJOR=${MAJOR%%.*}
MINOR=${K8S_VERSION#v*.}; MINOR=${MINOR%%.*}
BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
KUBE_LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    KUBE_LDFLAGS="$KUBE_LDFLAGS -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$MAJOR -X $pkg.gitMinor=$MINOR"
    KUBE_LDFLAGS="$KUBE_LDFLAGS -X $pkg.gitTreeState=clean -X $pkg.buildDate=$BUILD_DATE"
done
(
    cd "$KW"
    timed kube-download go get $(for c in $KUBE_CMDS; do echo "$c@$K8S_VERSION"; done)
    timed kube-build go build -ldflags "$KUBE_LDFLAGS" -o "$STAGE/" $KUBE_CMDS
)

# --- etcd -----------------------------------------------------------------------------
# go.etcd.io/etcd/server/v3 replaces its sibling modules with local folders too; requiring
# the siblings at the same version from a wrapper does the same as those replacements.
EW="$WORK/etcd"
mkdir -p "$EW"
(
    cd "$EW"
    go mod init modelyard.dev/etcd-build >/dev/null 2>&1
    req=""
    for m in server/v3 api/v3 client/pkg/v3 client/v3 pkg/v3; do
        req="$req -require=go.etcd.io/etcd/$m@$ETCD_VERSION"
    done
    go mod edit $req
    timed etcd-download go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    timed etcd-build go build -ldflags "-s -w" -o "$STAGE/etcd" go.etcd.io/etcd/server/v3
)

# --- kwok -----------------------------------------------------------------------------
# No replacements in its go.mod: go install works as is.
timed kwok-build env GOBIN="$STAGE" go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"

for b in $BINARIES; do [ -x "$STAGE/$b" ] || { echo "missing $b after the build" >&2; exit 1; }; done
"$STAGE/kube-apiserver" --version
"$STAGE/etcd" --version | head -1
"$STAGE/kwok" --version
cp "$TIMES" "$WORK/kube-wrapper.go.mod" "$STAGE/"
# Appear whole or not at all.
rm -rf "$OUT"
mv "$STAGE" "$OUT"
stages
echo "$OUT"
