"""Fixtures of the cluster tests: a real control plane on loopback, the chart installed in
it with the real helm, and the real operator running under the chart's ServiceAccount.

Every test here carries the `cluster` marker. The binaries come from tools/k8s/build.sh
(`make test` builds them when missing, once per machine).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from chart.binaries import tool

from .controlplane import ROOT, ControlPlane, binaries_dir, missing_binaries
from .kubetools import (MODELS_NAMESPACE, OPERATOR_SA, RELEASE_NAMESPACE, Kubectl, OperatorProcess, Tool,
                        wait_until)
from .podservers import PodServers, make_pod_model

CHART = ROOT / "charts" / "modelyard"
HERE = Path(__file__).parent

# A GPU node as GPU node pools have them: the device plugin's resource, the GPU
# feature discovery's product label, and the taint that keeps other pods away. The
# examples' GPU Models ask for nvidia.com/gpu.product=NVIDIA-L4 or tolerate the taint.
GPU_NODE = "gpu-node-1"
CPU_NODE = "cpu-node-1"
GPU_PRODUCT = "NVIDIA-L4"
NODES = [
    {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": GPU_NODE, "labels": {
            "kubernetes.io/hostname": GPU_NODE, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": GPU_PRODUCT, "type": "kwok"}},
        "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
        "status": {
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110", "nvidia.com/gpu": "8"},
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110", "nvidia.com/gpu": "8"},
        },
    },
    {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": CPU_NODE, "labels": {
            "kubernetes.io/hostname": CPU_NODE, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "type": "kwok"}},
        "status": {
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
        },
    },
]


def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    bindir = binaries_dir()
    missing = missing_binaries(bindir)
    if missing:
        pytest.fail(f"the control plane is not built ({', '.join(missing)} missing in {bindir}): "
                    "run `make k8s` (tools/k8s/build.sh), once per machine", pytrace=False)
    plane = ControlPlane(bindir, tmp_path_factory.mktemp("k8s")).start()
    try:
        admin = Kubectl(tool("kubectl"), plane.kubeconfig)
        admin.apply(yaml.safe_dump_all(NODES), namespace="default")
        admin.apply(bindir / "kwok-storage-class.yaml", namespace="default")
        wait_until(lambda: _nodes_ready(admin), 60, "kwok to make the nodes Ready", on_timeout=plane.logs)
        yield plane
    finally:
        plane.stop()


def _nodes_ready(kubectl: Kubectl) -> bool:
    nodes = kubectl.json("nodes")["items"]
    ready = [n for n in nodes if any(c["type"] == "Ready" and c["status"] == "True"
                                     for c in n.get("status", {}).get("conditions", []))]
    return len(ready) == len(NODES)


@pytest.fixture(scope="session")
def kubeconfig(control_plane) -> Path:
    """The cluster admin's kubeconfig (a client certificate in system:masters)."""
    return control_plane.kubeconfig


@pytest.fixture(scope="session")
def kubectl(control_plane) -> Kubectl:
    """kubectl as the cluster admin."""
    return Kubectl(tool("kubectl"), control_plane.kubeconfig)


@pytest.fixture(scope="session")
def helm(control_plane) -> Tool:
    return Tool(tool("helm"), control_plane.kubeconfig)


@pytest.fixture(scope="session")
def release(kubectl, helm) -> str:
    """The chart, installed by helm as a user would, watching the Models' namespace.

    This is the cluster's first install: the API server takes the CRD from it.
    """
    kubectl("create", "namespace", MODELS_NAMESPACE)
    out = helm("install", "modelyard", str(CHART), "--namespace", RELEASE_NAMESPACE, "--create-namespace",
               "--set-json", f'watch.namespaces=["{MODELS_NAMESPACE}"]', "--wait", "--timeout", "120s")
    # A CRD just made is established before its storage is: a list until then is a 429
    # "storage is (re)initializing", which the operator would meet first.
    wait_until(lambda: kubectl.run("get", "models,finetunes", "-n", MODELS_NAMESPACE, check=False).returncode == 0,
               60, "the CRDs' storage to be ready")
    return out


@pytest.fixture(scope="session")
def operator_kubeconfig(control_plane, kubectl, release, tmp_path_factory) -> Path:
    """A kubeconfig with a token of the chart's ServiceAccount: the operator's identity in a pod."""
    token = kubectl("create", "token", OPERATOR_SA, "-n", RELEASE_NAMESPACE, "--duration", "6h").strip()
    path = tmp_path_factory.mktemp("operator") / "kubeconfig"
    return control_plane.token_kubeconfig(path, token, MODELS_NAMESPACE)


@pytest.fixture(scope="session")
def operator(operator_kubeconfig, control_plane, tmp_path_factory):
    """The real operator process, under the ServiceAccount's token, so RBAC applies."""
    process = OperatorProcess(operator_kubeconfig, tmp_path_factory.mktemp("operator-log") / "operator.log", env={
        # Progress polled every second, and a full resync every 15 s so that a quiet
        # minute covers several of them.
        "MODELYARD_PROGRESS_INTERVAL": "1",
        "MODELYARD_RESYNC_INTERVAL": "15",
        # The autoscaler reads the load every second and averages 2 s of it.
        "MODELYARD_AUTOSCALE_INTERVAL": "1",
        "MODELYARD_AUTOSCALE_WINDOW": "2",
    }).start()
    yield process
    process.stop()
    print(process.log()[-20000:])


@pytest.fixture(scope="session")
def pod_model() -> Path:
    """The small generated GGUF that every really-served pod loads (podservers.py)."""
    return make_pod_model()


@pytest.fixture(scope="module")
def pod_servers(control_plane, pod_model, tmp_path_factory):
    """A real `modelyard serve` per inference pod of the Models a test names with
    `pod_servers.serve(name)`, bound to the pod's 127.16.x.y address (podservers.py)."""
    servers = PodServers(control_plane.kubeconfig, MODELS_NAMESPACE, tmp_path_factory.mktemp("pods"),
                         lambda _model: pod_model).start()
    yield servers
    servers.stop()
