"""Fixtures for the operator tests: Model bodies as the API server would hand them out."""
from __future__ import annotations

import copy
from typing import Any

import pytest

from modelyard.operator.settings import OperatorSettings

SMOLLM = {
    "apiVersion": "modelyard.dev/v1alpha1",
    "kind": "Model",
    "metadata": {"name": "smollm2-360m", "namespace": "ai", "uid": "uid-smollm2", "generation": 1},
    "spec": {
        "kind": "llm",
        "version": "1.0.0",
        "source": {"huggingface": {
            "repo": "HuggingFaceTB/SmolLM2-360M-Instruct-GGUF", "file": "smollm2-360m-instruct-q8_0.gguf"}},
        "gguf": {"initContextSize": 4096, "initGpuLayerSize": 99},
        "replicas": 1,
        "resources": {"gpu": 1, "requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
    },
}


def make_model(**spec_changes: Any) -> dict[str, Any]:
    model = copy.deepcopy(SMOLLM)
    model["spec"].update(spec_changes)
    return model


@pytest.fixture
def model() -> dict[str, Any]:
    return make_model()


@pytest.fixture
def settings() -> OperatorSettings:
    return OperatorSettings(server_image="example.com/modelyard-server:test")


@pytest.fixture
def kubectl(kmock, tmp_path):
    """KMock (the `kmock` fixture of kmock's pytest plugin) with the resources the operator uses."""
    from .kmock_cluster import Kubectl, declare

    logs: dict[str, bytes] = {}
    declare(kmock, logs)
    return Kubectl(kmock, logs)


@pytest.fixture
def operator(kmock, kubectl, tmp_path):
    """The real operator process against KMock; its log is printed when a test fails."""
    from .kmock_cluster import OperatorProcess, kubeconfig

    config = kubeconfig(tmp_path / "kubeconfig", kmock.servers[0].port)
    process = OperatorProcess(config, tmp_path / "operator.log").start()
    yield process
    process.stop()
    print(process.log()[-20000:])
