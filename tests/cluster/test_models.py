"""The examples, applied with kubectl to a real API server, served by the real operator.

kwok stands in for the kubelets: the download Job's pod "runs" for a few seconds and
completes, the inference pods become Ready wherever the real scheduler puts them.
No container runs, so what is checked here is the control plane's side: objects,
defaulting, scheduling constraints, garbage collection, RBAC, the operator's writes.
"""
from __future__ import annotations

import json
import random
import time

import pytest
import yaml

from .conftest import CPU_NODE, GPU_NODE, GPU_PRODUCT
from .controlplane import FETCH_PROGRESS, ROOT
from .kubetools import (MODELS_NAMESPACE, OPERATOR_USER, WRITE_VERBS, AuditTail, audit_events, describe,
                        object_name, wait_until)

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
READY_TIMEOUT = 240  # seconds: two shared cores run the whole control plane and the operator
LABEL = "modelyard.dev/model"


def base(name: str) -> str:
    return name.replace(".", "-")


def model_names() -> list[str]:
    return [yaml.safe_load(path.read_text())["metadata"]["name"] for path in EXAMPLES]


def phases(kubectl) -> dict[str, str]:
    return {m["metadata"]["name"]: (m.get("status") or {}).get("phase") for m in kubectl.items("models")}


def converged(model: dict) -> bool:
    status = model.get("status") or {}
    return status.get("phase") == "Ready" and status.get("observedGeneration") == model["metadata"]["generation"] \
        and status.get("readyReplicas") == model["spec"].get("replicas", 1)


@pytest.fixture(scope="module")
def examples(operator, kubectl, control_plane):
    """Every file of examples/ applied, and every Model Ready."""
    # The Secrets that the gated example's comment tells the user to create first.
    kubectl("create", "secret", "generic", "hf-token", "--from-literal=token=hf_test", "-n", MODELS_NAMESPACE)
    kubectl("create", "secret", "generic", "team-api-key", "--from-literal=key=test-key", "-n", MODELS_NAMESPACE)
    for path in EXAMPLES:
        out = kubectl.apply(path)
        assert "created" in out, out
    names = model_names()

    def all_ready():
        control_plane.check_alive()
        assert operator.alive(), operator.log()[-5000:]
        models = {m["metadata"]["name"]: m for m in kubectl.items("models")}
        return all(name in models and converged(models[name]) for name in names)

    wait_until(all_ready, READY_TIMEOUT, "every example Model to be Ready",
               on_timeout=lambda: f"{phases(kubectl)}\n{operator.log()[-6000:]}")
    return names


def test_each_example_downloads_then_serves(examples, kubectl):
    for name in examples:
        model = kubectl.get("models", name)
        conditions = {c["type"]: c for c in model["status"]["conditions"]}
        assert conditions["Downloaded"]["status"] == "True", model["status"]
        assert conditions["Ready"]["status"] == "True", model["status"]
        assert model["status"]["endpoint"] == f"http://{base(name)}.{MODELS_NAMESPACE}.svc:8083"
        # The download Job's pod ran to completion (kwok's simulated run), and the Job
        # controller marked the Job Complete: that is what the operator waited for.
        jobs = kubectl.items("jobs", selector=f"{LABEL}={base(name)}")
        assert len(jobs) == 1, [j["metadata"]["name"] for j in jobs]
        job = jobs[0]
        assert job["status"].get("succeeded") == 1, job["status"]
        assert any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"]["conditions"])
        pods = kubectl.items("pods", selector=f"job-name={job['metadata']['name']}")
        assert [p["status"]["phase"] for p in pods] == ["Succeeded"]
        # The cache was provisioned and bound.
        pvc = kubectl.get("pvc", f"{base(name)}-cache")
        assert pvc["status"]["phase"] == "Bound", pvc["status"]


def test_inference_pods_are_ready_where_the_model_says(examples, kubectl):
    for name in examples:
        model = kubectl.get("models", name)
        spec = model["spec"]
        pods = kubectl.items("pods", selector=f"{LABEL}={base(name)},app.kubernetes.io/component=server")
        assert len(pods) == spec.get("replicas", 1), [p["metadata"]["name"] for p in pods]
        for pod in pods:
            assert any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])
            gpu = (spec.get("resources") or {}).get("gpu")
            if gpu:
                # Only the GPU node has nvidia.com/gpu and it is tainted: the pod got there
                # through its GPU limit, its toleration and, where set, its nodeSelector.
                assert pod["spec"]["nodeName"] == GPU_NODE, (name, pod["spec"].get("nodeName"))
                limits = pod["spec"]["containers"][0]["resources"]["limits"]
                assert limits["nvidia.com/gpu"] == str(gpu)
                assert any(t.get("key") == "nvidia.com/gpu" for t in pod["spec"]["tolerations"])
            else:
                assert pod["spec"]["nodeName"] == CPU_NODE, (name, pod["spec"].get("nodeName"))
            if spec.get("nodeSelector"):
                assert pod["spec"]["nodeSelector"] == spec["nodeSelector"]
    # The gated example pins a GPU product: the label of our GPU node.
    llama = kubectl.items("pods", selector=f"{LABEL}=llama-3-2-1b,app.kubernetes.io/component=server")
    assert llama[0]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": GPU_PRODUCT}


def _table(text: str) -> list[dict[str, str]]:
    """kubectl's table as dicts, cut at the header's column starts (an empty cell stays empty)."""
    lines = text.splitlines()
    header = lines[0]
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    names = header.split()
    bounds = list(zip(starts, starts[1:] + [None]))
    return [{name: line[a:b].strip() for name, (a, b) in zip(names, bounds)} for line in lines[1:]]


def test_kubectl_get_models_shows_the_columns(examples, kubectl):
    out = kubectl("get", "models", "-n", MODELS_NAMESPACE)
    assert out.splitlines()[0].split() == ["NAME", "KIND", "PHASE", "PROGRESS", "READY", "AGE"], out
    rows = {row["NAME"]: row for row in _table(out)}
    for name in examples:
        model = kubectl.get("models", name)
        row = rows[name]
        # PROGRESS shows only while a download runs.
        assert row["KIND"] == model["spec"]["kind"] and row["PHASE"] == "Ready" and row["PROGRESS"] == "", row
        assert row["READY"] == str(model["spec"].get("replicas", 1)) and row["AGE"], row
    wide = {row["NAME"]: row for row in _table(kubectl("get", "models", "-n", MODELS_NAMESPACE, "-o", "wide"))}
    assert wide["smollm2-360m"]["ENDPOINT"] == f"http://smollm2-360m.{MODELS_NAMESPACE}.svc:8083", wide


PROGRESS_MODEL = {
    "apiVersion": "modelyard.dev/v1alpha1",
    "kind": "Model",
    "metadata": {"name": "progress-test"},
    "spec": {"kind": "embed", "source": {"url": "https://models.example/progress.gguf"}},
}


def test_progress_shows_while_downloading(examples, kubectl):
    """The fetch container's JSON lines reach the PROGRESS column: pods/log through the API
    server (kwok answers for the kubelet), read by the operator within a poll or two."""
    name = PROGRESS_MODEL["metadata"]["name"]
    kubectl.apply(yaml.safe_dump(PROGRESS_MODEL))
    seen: list[tuple[str, str]] = []

    def ready():
        row = _table(kubectl("get", "model", name, "-n", MODELS_NAMESPACE))[0]
        seen.append((row["PHASE"], row["PROGRESS"]))
        return row["PHASE"] == "Ready"
    wait_until(ready, READY_TIMEOUT, f"{name} to be Ready", interval=0.25)
    total = FETCH_PROGRESS["totalSize"]
    percent = f"{FETCH_PROGRESS['size'] * 100 // total}%"
    assert ("Downloading", percent) in seen, seen
    assert seen[-1] == ("Ready", ""), seen
    # Complete: the size is the whole file, and the percentage is gone.
    assert kubectl.get("models", name)["status"]["download"] == {"size": total, "totalSize": total}
    kubectl("delete", "model", name, "-n", MODELS_NAMESPACE)


def test_a_ready_cluster_is_quiet(examples, kubectl, control_plane):
    """Once every Model is Ready, a minute (four resyncs) without a single write by the operator.

    The classic failure: the API server defaults a field the operator did not set, the
    operator sees a difference and patches, forever.
    """
    before = {m["metadata"]["name"]: m["metadata"]["resourceVersion"] for m in kubectl.items("models")}
    # The Deployments of these Models; one of a Model deleted by an earlier test may still be
    # on its way out through the garbage collector.
    ours = {base(name) for name in before}

    def generations() -> dict:
        return {d["metadata"]["name"]: d["metadata"]["generation"] for d in kubectl.items("deployments")
                if d["metadata"]["name"] in ours}

    deployments = generations()
    start = time.time()
    time.sleep(60)
    events = audit_events(control_plane.audit_log, since=start)
    writes = [describe(e) for e in events if e["verb"] in WRITE_VERBS]
    assert not writes, "the operator wrote while nothing changed:\n" + "\n".join(writes)
    # It was not idle for want of running: its resyncs read every Model meanwhile.
    reads = [e for e in events if e["verb"] == "get" and e["objectRef"]["resource"] == "models"]
    assert len(reads) >= 2 * len(before), [describe(e) for e in events][:20]
    assert before == {m["metadata"]["name"]: m["metadata"]["resourceVersion"] for m in kubectl.items("models")}
    assert deployments == generations() and len(deployments) == len(before)


def _deployment_patches(audit_path, name: str, since: float) -> list[str]:
    return [describe(e) for e in audit_events(audit_path, since=since)
            if e["verb"] == "patch" and e["objectRef"]["resource"] == "deployments" and object_name(e) == name]


def _settle(kubectl, name: str, what: str, check=lambda model, deployment: True) -> None:
    def done():
        model = kubectl.get("models", name)
        deployment = kubectl.get("deployment", base(name))
        status = deployment.get("status") or {}
        return converged(model) and status.get("observedGeneration") == deployment["metadata"]["generation"] \
            and status.get("updatedReplicas") == status.get("replicas") == status.get("readyReplicas") \
            and check(model, deployment)
    wait_until(done, READY_TIMEOUT, what)


def test_a_serving_change_rolls_the_deployment_once(examples, kubectl, control_plane):
    name = "smollm2-360m"
    deployment = kubectl.get("deployment", base(name))
    generation = deployment["metadata"]["generation"]
    replica_sets = kubectl.items("replicasets", selector=f"{LABEL}={base(name)}")

    # A new context size is a new pod template: one patch, one new ReplicaSet.
    start = time.time()
    kubectl("patch", "model", name, "-n", MODELS_NAMESPACE, "--type", "merge",
            "-p", json.dumps({"spec": {"gguf": {"initContextSize": 8192}}}))

    def env_says(model, deployment):
        env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        return {"name": "MODELYARD_INIT_CONTEXT_SIZE", "value": "8192"} in env
    _settle(kubectl, name, "the new context size to roll out", env_says)
    time.sleep(17)  # one resync more: a defaulting fight would patch again here
    assert len(_deployment_patches(control_plane.audit_log, base(name), start)) == 1, \
        _deployment_patches(control_plane.audit_log, base(name), start)
    deployment = kubectl.get("deployment", base(name))
    assert deployment["metadata"]["generation"] == generation + 1
    after = kubectl.items("replicasets", selector=f"{LABEL}={base(name)}")
    assert len(after) == len(replica_sets) + 1, [r["metadata"]["name"] for r in after]

    # More replicas is a scale, not a rollout: one patch, no new ReplicaSet.
    start = time.time()
    kubectl("patch", "model", name, "-n", MODELS_NAMESPACE, "--type", "merge", "-p", '{"spec": {"replicas": 2}}')
    _settle(kubectl, name, "the second replica", lambda m, d: d["status"].get("readyReplicas") == 2)
    time.sleep(17)
    assert len(_deployment_patches(control_plane.audit_log, base(name), start)) == 1
    assert kubectl.get("deployment", base(name))["metadata"]["generation"] == generation + 2
    assert len(kubectl.items("replicasets", selector=f"{LABEL}={base(name)}")) == len(after)
    assert kubectl.get("models", name)["status"]["readyReplicas"] == 2


def test_an_adapters_change_keeps_the_pods_then_rolls_them(examples, kubectl, control_plane):
    """A new spec.adapters alone: an adapters-only Job while the Deployment stays as it is (the
    real API server keeps status.baseHash, which says the base is the cache's), then one patch
    that rolls the pods (a new ReplicaSet), never a scale to 0."""
    name = "smolvlm-256m"
    deployment = kubectl.get("deployment", base(name))
    template, replicas = deployment["spec"]["template"], deployment["spec"]["replicas"]
    replica_sets = kubectl.items("replicasets", selector=f"{LABEL}={base(name)}")
    start = time.time()
    kubectl("patch", "model", name, "-n", MODELS_NAMESPACE, "--type", "merge", "-p", json.dumps(
        {"spec": {"adapters": [{"name": "smolvlm-sql", "source": {"url": "https://example.com/sql-lora.gguf"}}]}}))

    def adapters_job():
        return [j for j in kubectl.items("jobs", selector=f"{LABEL}={base(name)}")
                if "-adapters-" in j["metadata"]["name"]]
    [job] = wait_until(adapters_job, READY_TIMEOUT, "the adapters-only Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][-1] == "--adapters-only"
    current = kubectl.get("deployment", base(name))
    assert current["spec"]["replicas"] == replicas and current["spec"]["template"] == template

    def rolled(model, deployment):
        ready = next((c for c in model["status"].get("conditions") or [] if c["type"] == "AdaptersReady"), {})
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        return ready.get("status") == "True" and \
            annotations["modelyard.dev/source-hash"] == model["status"]["sourceHash"]
    _settle(kubectl, name, "the pods rolled to the new adapters", rolled)
    assert len(_deployment_patches(control_plane.audit_log, base(name), start)) == 1, \
        _deployment_patches(control_plane.audit_log, base(name), start)
    after = kubectl.items("replicasets", selector=f"{LABEL}={base(name)}")
    assert len(after) == len(replica_sets) + 1, [r["metadata"]["name"] for r in after]


CHILDREN = ("jobs", "deployments", "replicasets", "services", "persistentvolumeclaims", "secrets", "pods")


def _children(kubectl, name: str) -> dict[str, list[str]]:
    found = {}
    for resource in CHILDREN:
        items = kubectl.items(resource, selector=f"{LABEL}={base(name)}")
        if items:
            found[resource] = [i["metadata"]["name"] for i in items]
    return found


def test_deleting_a_model_takes_its_children_away(examples, kubectl):
    name = "minilm-l6-v2-onnx"
    model = kubectl.get("models", name)
    children = _children(kubectl, name)
    assert set(children) >= {"jobs", "deployments", "services", "persistentvolumeclaims", "secrets"}, children
    for resource in ("jobs", "deployments", "services", "persistentvolumeclaims", "secrets"):
        item = kubectl.items(resource, selector=f"{LABEL}={base(name)}")[0]
        assert [r["uid"] for r in item["metadata"]["ownerReferences"]] == [model["metadata"]["uid"]]
    volume = kubectl.get("pvc", f"{base(name)}-cache")["spec"]["volumeName"]

    kubectl("delete", "model", name, "-n", MODELS_NAMESPACE)
    # The garbage collector, not the operator: it deletes what names the Model as owner.
    wait_until(lambda: not _children(kubectl, name), 120, f"the children of {name} to go",
               on_timeout=lambda: str(_children(kubectl, name)))
    wait_until(lambda: kubectl.get("pv", volume, namespace="default") is None, 60, "the released volume to go")
    assert name not in phases(kubectl)


KILL_MODEL = {
    "apiVersion": "modelyard.dev/v1alpha1",
    "kind": "Model",
    "metadata": {"name": "crash-test"},
    "spec": {
        "kind": "llm",
        "source": {"huggingface": {"repo": "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
                                   "file": "smollm2-135m-instruct-q8_0.gguf"}},
        "gguf": {"initContextSize": 2048},
        "resources": {"gpu": 1},
    },
}


def test_an_operator_killed_mid_reconcile_ten_times_makes_no_duplicates(examples, operator, kubectl, control_plane):
    """SIGKILL right after the operator's first write of each run; the Model changes before each run
    (new, scaled, a new pod template, a new source), so each run has work to be cut short in."""
    from .kubetools import OperatorProcess

    name = KILL_MODEL["metadata"]["name"]
    operator.stop()
    start = time.time()
    tail = AuditTail(control_plane.audit_log)
    kills = []
    try:
        kubectl.apply(yaml.safe_dump(KILL_MODEL))
        rng = random.Random(13)
        for round_ in range(10):
            if round_ == 5:  # a new source: the old Job must go, one new Job made
                kubectl("patch", "model", name, "-n", MODELS_NAMESPACE, "--type", "merge", "-p", json.dumps(
                    {"spec": {"source": {"huggingface": {"file": "smollm2-135m-instruct-q4_k_m.gguf"}}}}))
            elif round_ % 2:  # a new pod template: a rollout, once the Deployment exists
                kubectl("patch", "model", name, "-n", MODELS_NAMESPACE, "--type", "merge",
                        "-p", json.dumps({"spec": {"gguf": {"initContextSize": 2048 + 512 * round_}}}))
            elif round_:  # a scale
                kubectl("patch", "model", name, "-n", MODELS_NAMESPACE, "--type", "merge",
                        "-p", json.dumps({"spec": {"replicas": 2 if round_ % 4 else 1}}))
            tail.new()
            process = OperatorProcess(operator.kubeconfig, operator.log_path, env=operator.env).start()
            try:
                def wrote():
                    return [e for e in tail.new() if e.get("user", {}).get("username") == OPERATOR_USER
                            and e.get("verb") in WRITE_VERBS and e.get("stage") == "ResponseComplete"]
                first = _poll(wrote, 30)
                time.sleep(rng.uniform(0, 0.5))  # somewhere in the rest of that reconciliation
                kills.append(describe(first[0]) if first else "no write within 30 s")
            finally:
                process.kill()
    finally:
        operator.start()

    def converged_on_new_source():
        model = kubectl.get("models", name)
        jobs = kubectl.items("jobs", selector=f"{LABEL}={base(name)}")
        return converged(model) and len(jobs) == 1 \
            and jobs[0]["metadata"]["labels"].get("modelyard.dev/source-hash") == model["status"].get("sourceHash")
    wait_until(converged_on_new_source, READY_TIMEOUT, f"{name} to converge after the kills",
               on_timeout=lambda: "\n".join(kills) + "\n" + operator.log()[-5000:])
    # Every round changed the Model, so every run had something to write before its kill.
    assert not [k for k in kills if k.startswith("no write")], kills

    for resource in ("jobs", "deployments", "services", "persistentvolumeclaims"):
        items = kubectl.items(resource, selector=f"{LABEL}={base(name)}")
        assert len(items) == 1, (resource, [i["metadata"]["name"] for i in items])
    # Each child was created once (every other attempt met 409 Conflict); two sources, two Jobs.
    created: dict[str, list[str]] = {}
    for event in audit_events(control_plane.audit_log, since=start):
        if event["verb"] == "create" and event.get("responseStatus", {}).get("code") == 201:
            created.setdefault(event["objectRef"]["resource"], []).append(object_name(event))
    mine = {resource: [n for n in names if n.startswith(base(name))] for resource, names in created.items()}
    assert len(mine.get("jobs", [])) == 2 and len(set(mine["jobs"])) == 2, mine
    for resource in ("deployments", "services", "persistentvolumeclaims"):
        assert len(mine.get(resource, [])) == 1, (resource, mine)


def _poll(check, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    return None
