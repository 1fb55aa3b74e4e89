"""Scaling a Model on the real control plane: its scale subresource with `kubectl scale`,
an HPA (the real HPA controller), and the operator's own autoscaler on pods that really
serve (podservers.py: a real `modelyard serve` on each pod's 127.16.x.y address)."""
from __future__ import annotations

import json
import re
import threading

import httpx
import pytest
import yaml

from .kubetools import MODELS_NAMESPACE, wait_until
from .podservers import NO_EOS

TIMEOUT = 180  # seconds: two shared cores run the control plane, the operator and the servers
SELECTOR = "app.kubernetes.io/component=server,modelyard.dev/model={}"


def model(name: str, **spec) -> str:
    return yaml.safe_dump({
        "apiVersion": "modelyard.dev/v1alpha1", "kind": "Model", "metadata": {"name": name},
        "spec": {"kind": "llm", "source": {"url": f"https://models.example/{name}.gguf"},
                 "resources": {"requests": {"cpu": "100m"}}, **spec},
    })


def status(kubectl, name: str) -> dict:
    return (kubectl.get("models", name) or {}).get("status") or {}


def serving(kubectl, name: str, replicas: int):
    """The Model, once `replicas` pods of it are ready and its status says so."""
    def check():
        found = kubectl.get("models", name)
        s = found.get("status") or {}
        done = found["spec"].get("replicas") == replicas and s.get("readyReplicas") == replicas \
            and s.get("replicas") == replicas and s.get("observedGeneration") == found["metadata"]["generation"]
        return found if done else None
    return wait_until(check, TIMEOUT, f"{name} to serve with {replicas} pod(s)")


def ready_condition(model: dict) -> dict:
    return next(c for c in model["status"]["conditions"] if c["type"] == "Ready")


def events(kubectl, name: str, reason: str) -> list[str]:
    items = kubectl.items("events", selector="")
    return [e["message"] for e in items if e["involvedObject"]["name"] == name and e["reason"] == reason]


@pytest.fixture(scope="module")
def probe(operator, kubectl):
    """A Model on kwok's pods (nothing serves in them: the control plane's side only)."""
    kubectl.apply(model("scale-probe"))
    serving(kubectl, "scale-probe", 1)
    yield "scale-probe"
    kubectl("delete", "model", "scale-probe", "-n", MODELS_NAMESPACE, "--wait=false")


def test_kubectl_scale_moves_the_pods_and_zero_is_not_a_failure(probe, kubectl):
    kubectl("scale", "model", probe, "-n", MODELS_NAMESPACE, "--replicas", "3")
    found = serving(kubectl, probe, 3)
    assert kubectl.get("deployment", probe)["spec"]["replicas"] == 3
    # The scale subresource answers what an HPA reads: replicas and a selector that
    # finds exactly the Model's pods.
    scale = json.loads(kubectl("get", "--raw", f"/apis/modelyard.dev/v1alpha1/namespaces/{MODELS_NAMESPACE}"
                                               f"/models/{probe}/scale"))
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3
    assert scale["status"]["selector"] == found["status"]["selector"] == SELECTOR.format(probe)
    assert len(kubectl.items("pods", selector=scale["status"]["selector"])) == 3

    kubectl("scale", "model", probe, "-n", MODELS_NAMESPACE, "--replicas", "0")
    found = serving(kubectl, probe, 0)
    assert found["status"]["phase"] == "Pending"
    ready = ready_condition(found)
    assert (ready["status"], ready["reason"]) == ("False", "ScaledToZero"), ready
    assert kubectl.get("deployment", probe)["spec"]["replicas"] == 0

    kubectl("scale", "model", probe, "-n", MODELS_NAMESPACE, "--replicas", "1")
    assert serving(kubectl, probe, 1)["status"]["phase"] == "Ready"


def test_an_hpa_targets_a_model_and_scales_it(probe, kubectl):
    """The real HPA controller reads the Model's scale (AbleToScale, no "missing a
    selector") and writes it: below its minReplicas it scales the Model up to them. It
    cannot go further here: there is no metrics API."""
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": probe},
        "spec": {
            "scaleTargetRef": {"apiVersion": "modelyard.dev/v1alpha1", "kind": "Model", "name": probe},
            "minReplicas": 2, "maxReplicas": 4,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}],
        },
    }
    kubectl.apply(yaml.safe_dump(hpa))
    try:
        def able():
            found = kubectl.get("hpa", probe) or {}
            conditions = {c["type"]: c for c in (found.get("status") or {}).get("conditions") or []}
            return conditions if conditions.get("AbleToScale", {}).get("status") == "True" else None
        wait_until(able, 60, "the HPA to be AbleToScale")
        serving(kubectl, probe, 2)  # the HPA's doing, through models/scale
        wait_until(lambda: kubectl.get("hpa", probe)["status"].get("currentReplicas") == 2, 30,
                   "the HPA to see the 2 replicas through the Model's status")

        # In range, it goes on to the metrics: the selector was read (without one it
        # stops at InvalidSelector, "the HPA target's scale is missing a selector").
        def measured():
            conditions = able() or {}
            active = conditions.get("ScalingActive") or {}
            return conditions if active.get("reason") not in (None, "ScalingDisabled") else None
        conditions = wait_until(measured, 60, "the HPA to read the Model's pods' metrics")
        assert conditions["AbleToScale"]["status"] == "True", conditions
        assert conditions["ScalingActive"]["reason"] == "FailedGetResourceMetric", conditions
        assert "selector" not in conditions["ScalingActive"]["message"], conditions
    finally:
        kubectl("delete", "hpa", probe, "-n", MODELS_NAMESPACE)


def test_the_api_server_refuses_min_above_max(operator, kubectl):
    done = kubectl.run("apply", "-n", MODELS_NAMESPACE, "-f", "-", check=False,
                       input=model("upside-down", autoscaling={"minReplicas": 3, "maxReplicas": 2}))
    assert done.returncode != 0
    assert "autoscaling.minReplicas must be at most autoscaling.maxReplicas" in done.stderr, done.stderr
    assert kubectl.get("models", "upside-down") is None


def test_the_autoscaler_follows_the_load_of_pods_that_really_serve(operator, kubectl, pod_servers):
    """Concurrent long generations on the pod of a Model with spec.autoscaling: the
    operator reads the pods' gauges and scales up with an Event that says why, and back
    down once the load has been gone for the delay. (The operator's interval and window
    are 1 s and 2 s here: conftest.py.)"""
    name = "busy"
    pod_servers.serve(name)
    kubectl.apply(model(name, gguf={"initContextSize": 2048}, autoscaling={
        "minReplicas": 1, "maxReplicas": 3, "targetRequests": 2, "scaleDownDelaySeconds": 4}))
    try:
        serving(kubectl, name, 1)
        [pod] = pod_servers.wait_serving(name, 1)
        stop = threading.Event()
        clients = [threading.Thread(target=_generate_until, args=(pod, stop), daemon=True) for _ in range(6)]
        for client in clients:
            client.start()
        try:
            # 6 in flight (4 decoding and 2 waiting on the pod's 4 slots), 2 per replica: 3
            serving(kubectl, name, 3)
        finally:
            stop.set()
            for client in clients:
                client.join(30)
        up = events(kubectl, name, "ScaledUp")
        assert up and all(re.fullmatch(r"[12] -> [23]: [\d.]+ requests in flight, target 2 per replica", m)
                          for m in up), up
        serving(kubectl, name, 1)  # the load is gone: down to minReplicas after the delay
        # one step, or two when the average was still falling through the delay
        down = events(kubectl, name, "ScaledDown")
        assert down and all(re.fullmatch(r"[23] -> [12]: at most [\d.]+ requests in flight in the last 4 s, "
                                         r"target 2 per replica", m) for m in down), down
        pod_servers.wait_serving(name, 1)  # the removed pods' servers were stopped
    finally:
        kubectl("delete", "model", name, "-n", MODELS_NAMESPACE, "--wait=false")


def _generate_until(pod, stop: threading.Event) -> None:
    """Long streamed generations, one after another, until told to stop."""
    body = {"model": "busy", "prompt": "Once upon a time", "max_tokens": 400, "stream": True,
            "logit_bias": NO_EOS}
    with httpx.Client(timeout=120) as client:
        while not stop.is_set():
            with client.stream("POST", f"{pod.url}/v1/completions", json=body, headers=pod.headers()) as r:
                assert r.status_code == 200, r.read()
                for _ in r.iter_lines():
                    if stop.is_set():
                        break
