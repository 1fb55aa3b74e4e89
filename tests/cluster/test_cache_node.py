"""A ReadWriteOnce cache on two GPU nodes: the real scheduler keeps every pod that mounts it on
one node. Without the pods' affinity to the cache's label it spread the replicas over both
nodes (checked once with the affinity taken out), and on a real cluster the second node's
pods would wait in ContainerCreating on a Multi-Attach error. The adapters Job that runs
while they serve lands beside them too, and so does a FineTune's trainer without GPUs (it
tolerates the GPU node's taint as they do)."""
from __future__ import annotations

import copy

import pytest
import yaml

from .conftest import GPU_NODE, NODES
from .kubetools import MODELS_NAMESPACE, wait_until

MODEL = "rwo-replicas"
TUNE = "rwo-tune"
SECOND_GPU_NODE = "gpu-node-2"
REPLICAS = 3
TIMEOUT = 180
PODS = f"modelyard.dev/model={MODEL},app.kubernetes.io/component=server"


def _node_ready(kubectl, name) -> bool:
    node = kubectl.get("nodes", name, namespace="default") or {}
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (node.get("status") or {}).get("conditions", []))


@pytest.fixture(scope="module")
def two_gpu_nodes(operator, kubectl):
    """A second GPU node like the first, for this module only."""
    node = copy.deepcopy(NODES[0])
    node["metadata"]["name"] = SECOND_GPU_NODE
    node["metadata"]["labels"]["kubernetes.io/hostname"] = SECOND_GPU_NODE
    kubectl.apply(yaml.safe_dump(node), namespace="default")
    wait_until(lambda: _node_ready(kubectl, SECOND_GPU_NODE), 60, "kwok to make the second GPU node Ready")
    yield (GPU_NODE, SECOND_GPU_NODE)
    kubectl("delete", "finetune", TUNE, "-n", MODELS_NAMESPACE, "--ignore-not-found", "--wait=true")
    kubectl("delete", "model", MODEL, "-n", MODELS_NAMESPACE, "--ignore-not-found", "--wait=true")
    # Pods on a deleted node would stay Terminating (no kubelet would confirm their end): they go first.
    wait_until(lambda: not kubectl.items("pods", selector=f"modelyard.dev/cache={MODEL}"), TIMEOUT,
               "the Model's pods to go")
    kubectl("delete", "node", SECOND_GPU_NODE, "--wait=true")


def _scheduled(kubectl, selector, count, name_has=""):
    pods = kubectl.items("pods", selector=selector)
    placed = [p for p in pods if p["spec"].get("nodeName") and name_has in p["metadata"]["name"]]
    return placed if len(placed) >= count else None


def test_the_pods_of_a_read_write_once_cache_share_its_node(two_gpu_nodes, kubectl):
    kubectl.apply(yaml.safe_dump({
        "apiVersion": "modelyard.dev/v1alpha1", "kind": "Model", "metadata": {"name": MODEL},
        "spec": {"kind": "llm", "source": {"url": "https://example.com/m.gguf"}, "resources": {"gpu": 1},
                 "replicas": REPLICAS}}))
    pods = wait_until(lambda: _scheduled(kubectl, PODS, REPLICAS), TIMEOUT, f"{REPLICAS} inference pods scheduled")
    nodes = {p["spec"]["nodeName"] for p in pods}
    assert len(nodes) == 1 and nodes <= set(two_gpu_nodes), nodes
    [node] = nodes

    # The Model is Ready; an adapter added now is fetched by a Job while the replicas serve.
    wait_until(lambda: ((kubectl.get("models", MODEL) or {}).get("status") or {}).get("phase") == "Ready",
               TIMEOUT, "the Model to be Ready")
    kubectl("patch", "model", MODEL, "-n", MODELS_NAMESPACE, "--type", "merge", "-p",
            '{"spec": {"adapters": [{"name": "sql", "source": {"url": "https://example.com/sql.gguf"}}]}}')
    [job_pod] = wait_until(lambda: _scheduled(kubectl, f"modelyard.dev/cache={MODEL},job-name", 1, "-adapters-"),
                           TIMEOUT, "the adapters Job's pod scheduled")
    assert job_pod["spec"]["nodeName"] == node

    # A FineTune without GPUs on it: its trainer joins the GPU pods on their tainted node.
    kubectl.apply(yaml.safe_dump({
        "apiVersion": "modelyard.dev/v1alpha1", "kind": "FineTune", "metadata": {"name": TUNE},
        "spec": {"baseModel": MODEL, "dataset": {"path": "datasets/train.jsonl"}, "resources": {"gpu": 0}}}))
    [trainer] = wait_until(lambda: _scheduled(kubectl, f"modelyard.dev/finetune={TUNE}", 1), 60,
                           "the trainer's pod scheduled")
    assert trainer["spec"]["nodeName"] == node
    assert "nvidia.com/gpu" not in str(trainer["spec"]["containers"][0].get("resources"))
