"""The chart's Role against the operator's real calls, as the API server's audit log saw them.

The operator runs under a token of the chart's ServiceAccount, so every call it makes
was authorized by RBAC. Whatever the other tests did, this one walks a Model through
a whole life of its own (create, download, serve, scale, new source) first.
"""
from __future__ import annotations

import json

import yaml

from .kubetools import MODELS_NAMESPACE, audit_events, describe, wait_until
from .test_inference_pool import install_crd, walk_pool

MODEL = {
    "apiVersion": "modelyard.dev/v1alpha1",
    "kind": "Model",
    "metadata": {"name": "rbac-probe"},
    "spec": {
        "kind": "embed",
        "source": {"url": "https://models.example/probe-v1.gguf"},
        "resources": {"requests": {"cpu": "100m"}},
    },
}

# A FineTune on the probe: the operator reads it and writes its status (an embed base is
# refused: BaseNotTrainable, no Job).
FINETUNE = {
    "apiVersion": "modelyard.dev/v1alpha1",
    "kind": "FineTune",
    "metadata": {"name": "rbac-probe-tune"},
    "spec": {"baseModel": "rbac-probe", "dataset": {"path": "d.jsonl"}},
}


def _converged(kubectl, source: str) -> bool:
    model = kubectl.get("models", "rbac-probe")
    status = (model or {}).get("status") or {}
    jobs = kubectl.items("jobs", selector="modelyard.dev/model=rbac-probe")
    return model["spec"]["source"]["url"] == source and status.get("phase") == "Ready" \
        and status.get("observedGeneration") == model["metadata"]["generation"] and len(jobs) == 1 \
        and status.get("readyReplicas") == model["spec"].get("replicas", 1)


def test_every_call_is_allowed_and_every_granted_verb_is_used(operator, kubectl, control_plane):
    kubectl.apply(yaml.safe_dump(MODEL))
    wait_until(lambda: _converged(kubectl, MODEL["spec"]["source"]["url"]), 240, "rbac-probe to be Ready",
               on_timeout=lambda: operator.log()[-5000:])
    # 3 replicas above the autoscaler's maximum of 2: it brings them in through models/scale.
    kubectl("patch", "model", "rbac-probe", "-n", MODELS_NAMESPACE, "--type", "merge",
            "-p", '{"spec": {"replicas": 3, "autoscaling": {"minReplicas": 1, "maxReplicas": 2}}}')
    wait_until(lambda: kubectl.get("models", "rbac-probe")["spec"]["replicas"] == 2, 60,
               "the autoscaler to bring rbac-probe to its maxReplicas", on_timeout=lambda: operator.log()[-5000:])
    # An InferencePool made, put back and deleted: the Role's verbs on pools (GAIE's CRD installed).
    install_crd(kubectl)
    walk_pool(kubectl, operator, "rbac-probe")
    kubectl.apply(yaml.safe_dump(FINETUNE))
    wait_until(lambda: ((kubectl.get("finetunes", "rbac-probe-tune") or {}).get("status") or {}).get("phase")
               == "Failed", 60, "the FineTune's status", on_timeout=lambda: operator.log()[-5000:])
    new_source = "https://models.example/probe-v2.gguf"
    kubectl("patch", "model", "rbac-probe", "-n", MODELS_NAMESPACE, "--type", "merge",
            "-p", json.dumps({"spec": {"source": {"url": new_source}}}))
    wait_until(lambda: _converged(kubectl, new_source), 240, "rbac-probe to be Ready on its new source",
               on_timeout=lambda: operator.log()[-5000:])

    events = audit_events(control_plane.audit_log)
    denied = [describe(e) for e in events if e.get("responseStatus", {}).get("code") == 403]
    assert not denied, "RBAC refused calls the operator makes:\n" + "\n".join(denied)
    # Refused for another reason: a body the real API server finds invalid. 404 (a get of
    # what is not there yet) and 409 (a create after a restart) are the operator's normal
    # questions. A pod that has not started yet has no log (400), and a request cut by
    # the SIGKILLs of the restart test ends as "context canceled" (a 500, or a 504 "Timeout"),
    # or, when the kill lands while the body is on its way, as a 500 "unexpected EOF".
    cut = ("context canceled", "unexpected EOF")
    rejected = [describe(e) for e in events if e.get("responseStatus", {}).get("code", 200) >= 400
                and e["responseStatus"]["code"] not in (403, 404, 409)
                and not any(c in (e["responseStatus"].get("message") or "") for c in cut)
                and (e.get("objectRef") or {}).get("subresource") != "log"]
    assert not rejected, "the API server refused requests of the operator:\n" + "\n".join(rejected)
    # Discovery (/api, /apis) has no object; every object it touched is in its namespace.
    outside = [describe(e) for e in events
               if e.get("objectRef") and e["objectRef"].get("namespace") != MODELS_NAMESPACE]
    assert not outside, "calls outside the watched namespace:\n" + "\n".join(outside)

    role = kubectl.get("role", "modelyard", namespace=MODELS_NAMESPACE)
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    used = set()
    for event in events:
        ref = event.get("objectRef")
        if not ref:
            continue
        resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        used.add((ref.get("apiGroup", ""), resource, event["verb"]))
    unused = sorted(granted - used)
    print("granted and used:", sorted(granted & used))
    assert not unused, f"granted by the chart's Role but never used by the operator: {unused}"
