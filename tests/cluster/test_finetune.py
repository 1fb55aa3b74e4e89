"""FineTunes and a Model's adapters on the real control plane: the API server applies the CRDs'
CEL rules, the operator makes the trainer Job (GPU placement: the real scheduler puts its pod
on the GPU node), kwok runs its pod and serves its log (step 3 of 6, controlplane.py), the
status follows, and the garbage collector takes the Job away with the FineTune."""
from __future__ import annotations

import json

import pytest
import yaml

from .conftest import GPU_NODE
from .controlplane import TRAIN_PROGRESS
from .kubetools import MODELS_NAMESPACE, CommandError, wait_until

BASE = "ft-base"
TIMEOUT = 120


def model(name, **spec):
    return {"apiVersion": "modelyard.dev/v1alpha1", "kind": "Model", "metadata": {"name": name},
            "spec": {"kind": "llm", "source": {"url": "https://example.com/base.gguf"},
                     "resources": {"gpu": 1}, **spec}}


def finetune(name, **spec):
    return {"apiVersion": "modelyard.dev/v1alpha1", "kind": "FineTune", "metadata": {"name": name},
            "spec": {"baseModel": BASE, "dataset": {"path": "datasets/train.jsonl"},
                     "hyperparameters": {"loraRank": 16, "learningRate": 0.0002}, "resources": {"gpu": 1}, **spec}}


def refused(kubectl, manifest) -> str:
    with pytest.raises(CommandError) as caught:
        kubectl.apply(yaml.safe_dump(manifest))
    return str(caught.value)


@pytest.fixture(scope="module")
def base(operator, kubectl):
    kubectl.apply(yaml.safe_dump(model(BASE, adapters=[
        {"name": "sql", "source": {"huggingface": {"repo": "org/loras", "file": "sql.gguf"}}},
        {"name": "mine", "source": {"path": "adapters/mine.gguf"}}])))
    return BASE


def test_the_api_server_applies_the_rules(base, kubectl):
    assert "loraRank" in refused(kubectl, finetune("bad", hyperparameters={"loraRank": 0}))
    assert "learningRate" in refused(kubectl, finetune("bad", hyperparameters={"learningRate": 0}))
    assert "exactly one of dataset.path or dataset.url" in refused(
        kubectl, finetune("bad", dataset={"path": "a", "url": "https://x/y"}))
    assert "cannot leave it" in refused(kubectl, finetune("bad", dataset={"path": "../etc/x"}))
    twice = [{"name": "a", "source": {"url": "https://x/a.gguf"}}, {"name": "a", "source": {"path": "a.gguf"}}]
    assert "Duplicate value" in refused(kubectl, model("twice", adapters=twice))
    assert "Model's name" in refused(kubectl, model("self", adapters=[{"name": "self", "source": {"path": "a"}}]))
    assert "exactly one of an adapter's source" in refused(
        kubectl, model("both", adapters=[{"name": "a", "source": {"path": "a", "url": "https://x/a"}}]))
    explained = kubectl("explain", "finetune.spec.hyperparameters.loraRank")
    assert "lora_rank" in explained and "at most 256" in explained


def test_the_download_job_fetches_the_adapters(base, kubectl):
    job = wait_until(lambda: next(iter(kubectl.items("jobs", selector="modelyard.dev/model=ft-base")), None),
                     TIMEOUT, "the base's download Job")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert [json.loads(command[i + 1])["name"] for i, a in enumerate(command) if a == "--adapter"] == ["sql", "mine"]


def test_a_finetune_trains_on_a_gpu_node_and_goes_with_its_owner(base, kubectl):
    kubectl.apply(yaml.safe_dump(finetune("sql-tune")))
    # The base downloads (kwok's Job pod), then the trainer's Job runs on the GPU node.
    pod = wait_until(lambda: next(iter(kubectl.items("pods", selector="modelyard.dev/finetune=sql-tune")), None),
                     TIMEOUT, "the trainer's pod")
    pod = wait_until(lambda: (p := kubectl.get("pods", pod["metadata"]["name"])) and p["spec"].get("nodeName") and p,
                     TIMEOUT, "the trainer's pod to be scheduled")
    assert pod["spec"]["nodeName"] == GPU_NODE
    assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == f"{BASE}-cache"

    def running():
        status = (kubectl.get("finetunes", "sql-tune") or {}).get("status") or {}
        return status if status.get("phase") == "Running" and status.get("step") else None
    status = wait_until(running, TIMEOUT, "the FineTune Running with its trainer's step")
    assert (status["step"], status["totalSteps"], status["loss"]) == (3, 6, TRAIN_PROGRESS["loss"])
    assert status["progress"] == "50%"

    def succeeded():
        status = (kubectl.get("finetunes", "sql-tune") or {}).get("status") or {}
        return status if status.get("phase") == "Succeeded" else None
    status = wait_until(succeeded, TIMEOUT, "the FineTune Succeeded")
    assert status["progress"] == "100%" and status["adapter"] == "sql-tune"
    table = kubectl("get", "finetunes", "sql-tune", "-n", MODELS_NAMESPACE)
    assert table.split()[:5] == ["NAME", "BASE", "PHASE", "PROGRESS", "LOSS"]
    assert table.split()[6:10] == ["sql-tune", BASE, "Succeeded", "100%"]

    # The spec is immutable; deleting the FineTune takes its Job away (the garbage collector).
    assert "immutable" in refused(kubectl, finetune("sql-tune", hyperparameters={"loraRank": 8}))
    kubectl("delete", "finetune", "sql-tune", "-n", MODELS_NAMESPACE)
    wait_until(lambda: kubectl.get("jobs", "sql-tune-train") is None, TIMEOUT, "the trainer Job to be collected")
