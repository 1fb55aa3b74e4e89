"""Fixtures for the operator tests: Model bodies as the API server would hand them out."""
from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
import pytest_asyncio

from modelyard.operator import builders
from modelyard.operator.planning import Observed, plan
from modelyard.operator.settings import OperatorSettings

NOW = "2025-01-01T00:00:00Z"

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
    from .kmock_cluster import FAULTS, Kubectl, declare

    logs: dict[str, bytes] = {}
    declare(kmock, logs)
    FAULTS.clear()
    yield Kubectl(kmock, logs)
    FAULTS.clear()


@pytest_asyncio.fixture
async def operator(kmock, kubectl, tmp_path):
    """The real operator process against KMock; its log is printed when a test fails."""
    from .kmock_cluster import OperatorProcess, kubeconfig

    config = kubeconfig(tmp_path / "kubeconfig", kmock.servers[0].port)
    process = OperatorProcess(config, tmp_path / "operator.log").start()
    yield process
    # In a thread: KMock answers on this loop, and an operator that is mid-request when
    # SIGTERM comes waits for the answer before it exits (else 10 s, then a kill).
    await asyncio.to_thread(process.stop)
    record_operator_calls(kmock)
    print(process.log()[-20000:])


# ---- the operator's calls, for the RBAC test ---------------------------------------------
# Every call the operator process makes to KMock, as (group, resource, subresource, verb),
# from every scenario that runs it. The kubeconfig's token tells its requests from the
# test's own (the test plays kubectl and the controllers without one).
OPERATOR_CALLS: set[tuple[str, str, str, str]] = set()
SCENARIOS: dict[str, bool] = {}  # node id -> whether it passed
CALLS_FILE = "MODELYARD_TEST_RBAC_CALLS"  # set: the calls are appended there as JSON lines
RBAC_TEST = "test_rbac_derived.py"


def _verb(request) -> str:
    method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
    if method == "GET":
        if request.params.get("watch") in ("true", "1"):
            return "watch"
        return "get" if request.name else "list"
    return {"POST": "create", "PATCH": "patch", "PUT": "update",
            "DELETE": "delete" if request.name else "deletecollection"}.get(method, method.lower())


def operator_calls(kmock) -> set[tuple[str, str, str, str]]:
    calls = set()
    for request in list(kmock):
        auth = {k.lower(): v for k, v in request.headers.items()}.get("authorization")
        if auth != "Bearer test-token" or request.resource is None or not request.resource.plural:
            continue
        calls.add((request.resource.group or "", request.resource.plural,
                   request.subresource or "", _verb(request)))
    return calls


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if "operator" in getattr(item, "fixturenames", ()) and report.when == "call":
        SCENARIOS[item.nodeid] = report.passed


def pytest_collection_modifyitems(session, config, items):
    """The RBAC test runs after every scenario of the session."""
    items.sort(key=lambda item: item.nodeid.split("::")[0].endswith(RBAC_TEST))


def record_operator_calls(kmock) -> None:
    import json
    import os

    calls = operator_calls(kmock)
    OPERATOR_CALLS.update(calls)
    if os.environ.get(CALLS_FILE):
        with open(os.environ[CALLS_FILE], "a") as f:
            for call in sorted(calls):
                f.write(json.dumps(call) + "\n")


# ---- what the planning tests share ------------------------------------------------------

def run(observed, settings, now=NOW):
    """The operator's plan for what it observed, at a fixed time."""
    return plan(observed, settings, now=now, api_key="generated-key")


def condition(status, kind):
    return next(c for c in status["conditions"] if c["type"] == kind)


def serving(model, settings, ready=1):
    """A Model whose download is complete and whose Deployment and Service exist."""
    digest = builders.source_hash(model["spec"])
    deployment = builders.build_deployment(model, settings, source_hash=digest)
    deployment["status"] = {"readyReplicas": ready}
    model["status"] = {"sourceHash": digest, "conditions": [
        {"type": "Downloaded", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}
    return Observed(model, pvc=builders.build_pvc(model, settings), deployment=deployment,
                    service=builders.build_service(model))
