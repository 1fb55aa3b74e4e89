"""A Model's InferencePool on the real control plane, with GAIE's own v1 CRD installed
(gaie_inferencepools_v1.yaml): the API server validates the pool the operator builds against
that schema, RBAC is the chart's Role, and the garbage collector deletes the pool with its
Model. `walk_pool` is also the RBAC test's use of every verb the Role grants on pools."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from .kubetools import MODELS_NAMESPACE, wait_until

CRD = Path(__file__).with_name("gaie_inferencepools_v1.yaml")
POOLS = "inferencepools.inference.networking.k8s.io"
TIMEOUT = 120  # seconds: the operator resyncs every 15 s here; two shared cores


def install_crd(kubectl) -> None:
    kubectl("apply", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", f"crd/{POOLS}", "--timeout=60s")


def pool_condition(kubectl, name: str) -> dict:
    model = kubectl.get("models", name) or {}
    return next((c for c in (model.get("status") or {}).get("conditions") or [] if c["type"] == "InferencePool"), {})


def wait_pool_reason(kubectl, name: str, reason: str, timeout: float = TIMEOUT) -> dict:
    """The Model's InferencePool condition once its reason is `reason`."""
    return wait_until(lambda: (lambda c: c if c.get("reason") == reason else None)(pool_condition(kubectl, name)),
                      timeout, f"{name}'s InferencePool condition {reason}")


def walk_pool(kubectl, operator, name: str) -> dict:
    """Ask for the Model's pool, edit it (the operator puts it back), decline it (the operator
    deletes it). The pool as it was first made."""
    log = lambda: operator.log()[-5000:]  # noqa: E731
    kubectl("patch", "model", name, "-n", MODELS_NAMESPACE, "--type", "merge", "-p", '{"spec": {"inferencePool": true}}')
    pool = wait_until(lambda: kubectl.get(POOLS, name.replace(".", "-")), TIMEOUT, f"{name}'s InferencePool",
                      on_timeout=log)
    kubectl("patch", POOLS, pool["metadata"]["name"], "-n", MODELS_NAMESPACE, "--type", "merge",
            "-p", json.dumps({"spec": {"targetPorts": [{"number": 9000}]}}))
    wait_until(lambda: kubectl.get(POOLS, pool["metadata"]["name"])["spec"]["targetPorts"] == [{"number": 8083}],
               TIMEOUT, "the operator to put the pool's port back", on_timeout=log)
    kubectl("patch", "model", name, "-n", MODELS_NAMESPACE, "--type", "merge", "-p", '{"spec": {"inferencePool": false}}')
    wait_until(lambda: kubectl.get(POOLS, pool["metadata"]["name"]) is None, TIMEOUT, "the declined pool to go",
               on_timeout=log)
    return pool


def test_a_pool_valid_by_gaies_schema_and_collected_with_its_model(operator, kubectl):
    install_crd(kubectl)
    name = "pool-probe"
    kubectl.apply(yaml.safe_dump({
        "apiVersion": "modelyard.dev/v1alpha1", "kind": "Model", "metadata": {"name": name},
        "spec": {"kind": "llm", "source": {"url": "https://models.example/pool-probe.gguf"},
                 "resources": {"requests": {"cpu": "100m"}}},
    }))
    pool = walk_pool(kubectl, operator, name)
    model = kubectl.get("models", name)
    assert pool["spec"]["selector"]["matchLabels"] == {"modelyard.dev/model": name,
                                                       "app.kubernetes.io/component": "server"}
    assert pool["spec"]["targetPorts"] == [{"number": 8083}]
    assert pool["spec"]["endpointPickerRef"] == {"name": f"{name}-epp", "kind": "Service", "port": {"number": 9002},
                                                 "group": "", "failureMode": "FailClose"}
    # stored as built (the CRD's defaults are written out): no patch on every pass
    patches = [e for e in kubectl.items("events") if e["involvedObject"]["name"] == name
               and e["reason"] == "Updated" and "InferencePool" in e["message"]]
    assert len(patches) == 1, [e["message"] for e in patches]  # the one that undid the edit
    assert pool["metadata"]["ownerReferences"][0]["uid"] == model["metadata"]["uid"]
    assert not pool_condition(kubectl, name)  # declined: no condition left

    # Asked again, then the Model goes: the garbage collector takes its pool.
    kubectl("patch", "model", name, "-n", MODELS_NAMESPACE, "--type", "merge", "-p", '{"spec": {"inferencePool": true}}')
    wait_until(lambda: kubectl.get(POOLS, name), TIMEOUT, "the pool again", on_timeout=lambda: operator.log()[-5000:])
    # No endpoint picker runs for it here: a Gateway could not route to it, and the Model says so.
    c = wait_pool_reason(kubectl, name, "PickerUnavailable")
    assert c["status"] == "False" and "pool-probe-epp:9002" in c["message"]
    assert "does not exist" in c["message"]
    # One Warning each time the Model asked for its pool (walk_pool's, then this one), not one a pass.
    assert [e["type"] for e in kubectl.items("events") if e["involvedObject"]["name"] == name
            and e["reason"] == "PickerUnavailable"] == ["Warning", "Warning"]
    kubectl("delete", "model", name, "-n", MODELS_NAMESPACE, "--wait=false")
    wait_until(lambda: kubectl.get(POOLS, name) is None, TIMEOUT, "the pool to be garbage-collected")
    assert operator.alive()
