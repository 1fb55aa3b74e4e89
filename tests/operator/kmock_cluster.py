"""A KMock API server the real operator process talks to, and the test's own kubectl.

KMock keeps objects in memory and serves discovery, list, watch, create, merge and
JSON patch, and delete. It is simpler than a real API server, so the test plays the
missing parts: it sets uid, resourceVersion, creationTimestamp and generation on what
it creates, it plays the Job controller and the kubelet by creating pods and patching
the status of Jobs and Deployments, and it serves the fetch pods' logs.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kmock

NAMESPACE = "ai"
_VERBS = {"list", "watch", "get", "patch", "create", "delete"}
RESOURCES = {
    "modelyard.dev/v1alpha1/models": ("Model", {"status", "scale"}),
    "modelyard.dev/v1alpha1/finetunes": ("FineTune", {"status"}),
    "v1/persistentvolumeclaims": ("PersistentVolumeClaim", set()),
    "v1/services": ("Service", set()),
    "v1/secrets": ("Secret", set()),
    "v1/pods": ("Pod", {"log"}),
    "v1/events": ("Event", set()),
    "batch/v1/jobs": ("Job", {"status"}),
    "apps/v1/deployments": ("Deployment", {"status"}),
    "v1/namespaces": ("Namespace", set()),  # discoverable, as on any cluster; never listed
}
PATHS = {
    "models": "/apis/modelyard.dev/v1alpha1",
    "finetunes": "/apis/modelyard.dev/v1alpha1",
    "jobs": "/apis/batch/v1",
    "deployments": "/apis/apps/v1",
    "persistentvolumeclaims": "/api/v1",
    "services": "/api/v1",
    "secrets": "/api/v1",
    "pods": "/api/v1",
    "events": "/api/v1",
    "inferencepools": "/apis/inference.networking.k8s.io/v1",  # declared by the tests that install it
}
# GAIE's InferencePool, for the tests of a cluster that has its CRD (declare_inference_pools).
INFERENCE_POOLS = ("inference.networking.k8s.io/v1/inferencepools", "InferencePool")
_versions = itertools.count(1)


class Emulator(kmock.KubernetesEmulator):
    """KMock plus two API-server duties: names from generateName, and label selectors.

    Events are posted with `metadata.generateName`; without a generated name, KMock
    would store every Event under the same empty name and refuse the second one.
    Equality label selectors keep a list of one Model's Jobs from returning every
    Job in the namespace (the operator checks the labels again anyway).
    """

    async def _handle(self, request):  # type: ignore[no-untyped-def]
        fault = _take_fault(request)
        if fault is not None:
            return fault
        meta = request.data.get("metadata") if isinstance(request.data, dict) else None
        if request.action == kmock.action.CREATE and meta and not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:8]
        return await super()._handle(request)

    async def _serve_list(self, request):  # type: ignore[no-untyped-def]
        result = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        if selector:
            wanted = dict(term.split("=", 1) for term in selector.split(","))
            result["items"] = [item for item in result["items"] if wanted.items() <= (
                (item.get("metadata") or {}).get("labels") or {}).items()]
        return result


# Answers a real API server gives under trouble (an etcd hiccup, a webhook timeout):
# [method, plural, subresource, status, times left]. Only the operator's requests get
# them (they carry the kubeconfig's token); the test's own calls never do.
FAULTS: list[list[Any]] = []


def inject(method: str, plural: str, status: int = 500, times: int = 1, sub: str | None = None) -> list[Any]:
    """The operator's next `times` calls of `method` on `plural` answer `status`."""
    fault = [method.upper(), plural, sub, status, times]
    FAULTS.append(fault)
    return fault


def _take_fault(request):  # type: ignore[no-untyped-def]
    import aiohttp.web

    headers = {k.lower(): v for k, v in request.headers.items()}
    if headers.get("authorization") != "Bearer test-token" or request.resource is None:
        return None
    method = str(getattr(request.method, "value", request.method)).upper()
    for fault in FAULTS:
        wanted_method, plural, sub, status, left = fault
        if left > 0 and method == wanted_method and request.resource.plural == plural \
                and (request.subresource or None) == sub:
            fault[4] -= 1
            return aiohttp.web.json_response(
                {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status,
                 "reason": "InternalError", "message": "injected by the test"}, status=status)
    return None


def declare(server: kmock.KubernetesEmulator, logs: dict[str, bytes]) -> None:
    for key, (kind, subresources) in RESOURCES.items():
        server.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=kind != "Namespace", verbs=_VERBS,
                                                   subresources=subresources)
    # Pod logs are plain text; KMock serves what the test put in `logs` (the fetch's JSON lines).
    server["get", re.compile(r"/api/v1/namespaces/[^/]+/pods/[^/]+/log")] << (
        lambda request: logs.get(request.name, b""))


def declare_inference_pools(server: kmock.KubernetesEmulator) -> None:
    key, kind = INFERENCE_POOLS
    server.resources[key] = kmock.ResourceInfo(kind=kind, namespaced=True, verbs=_VERBS, subresources={"status"})


def kubeconfig(path: Path, port: int) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: kmock, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: test, user: {token: test-token}}]\n"
        f"contexts: [{{name: kmock, context: {{cluster: kmock, user: test, namespace: {NAMESPACE}}}}}]\n"
        "current-context: kmock\n"
    )
    return path


class Kubectl:
    """What a test does to the cluster, over HTTP like kubectl: no shortcut into KMock's memory."""

    def __init__(self, server: kmock.KubernetesEmulator, logs: dict[str, bytes]) -> None:
        self.server = server
        self.logs = logs

    def url(self, resource: str, name: str | None = None, sub: str | None = None, ns: str = NAMESPACE) -> str:
        url = f"{PATHS[resource]}/namespaces/{ns}/{resource}"
        return url + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")

    async def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        async with self.server.request(method, url, **kwargs) as response:
            data = await response.json(content_type=None)
            if response.status == 404:
                return None
            assert response.status < 400, (method, url, response.status, data)
            return data

    async def get(self, resource: str, name: str) -> dict[str, Any] | None:
        return await self._call("GET", self.url(resource, name))

    async def list(self, resource: str) -> list[dict[str, Any]]:
        return (await self._call("GET", self.url(resource)))["items"]

    async def create(self, resource: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create like an API server would: with the fields KMock does not set."""
        meta = body.setdefault("metadata", {})
        meta.setdefault("namespace", NAMESPACE)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = str(next(_versions))
        meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        return await self._call("POST", self.url(resource), json=body)

    async def patch(self, resource: str, name: str, patch: dict[str, Any], sub: str | None = None) -> Any:
        patch.setdefault("metadata", {})["resourceVersion"] = str(next(_versions))
        return await self._call("PATCH", self.url(resource, name, sub), json=patch,
                                headers={"Content-Type": "application/merge-patch+json"})

    async def change_spec(self, name: str, spec: dict[str, Any]) -> None:
        """A spec change as a user makes it: the server bumps the generation."""
        model = await self.get("models", name)
        generation = model["metadata"].get("generation", 1) + 1
        await self.patch("models", name, {"spec": spec, "metadata": {"generation": generation}})

    async def delete(self, resource: str, name: str) -> None:
        await self._call("DELETE", self.url(resource, name))

    async def start_pod_of(self, job: dict[str, Any], log: str = "") -> str:
        """Play the Job controller and the kubelet: a running pod with the Job's labels and a log."""
        name = f"{job['metadata']['name']}-{uuid.uuid4().hex[:5]}"
        labels = dict(job["spec"]["template"]["metadata"]["labels"], **{"job-name": job["metadata"]["name"]})
        self.logs[name] = log.encode()
        await self.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
                                   "spec": job["spec"]["template"]["spec"], "status": {"phase": "Running"}})
        await self.patch("jobs", job["metadata"]["name"], {"status": {"active": 1}}, sub="status")
        return name

    async def finish_job(self, name: str, ok: bool = True, message: str = "") -> None:
        condition = {"type": "Complete" if ok else "Failed", "status": "True", "message": message,
                     "reason": "Completed" if ok else "BackoffLimitExceeded"}
        status = {"active": 0, "succeeded" if ok else "failed": 1, "conditions": [condition]}
        await self.patch("jobs", name, {"status": status}, sub="status")

    async def events(self) -> list[dict[str, Any]]:
        return await self.list("events")


async def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll an async check until it returns something truthy; the operator works concurrently."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or check}: last result {last!r}")


class OperatorProcess:
    """`modelyard operator`, the installed command, in its own process."""

    def __init__(self, kubeconfig_path: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig_path
        self.log_path = log_path
        self.env = env or {}
        self.process: subprocess.Popen | None = None

    def start(self) -> "OperatorProcess":
        env = {**os.environ, "MODELYARD_PROGRESS_INTERVAL": "0.5", "MODELYARD_RESYNC_INTERVAL": "3600",
               "MODELYARD_AUTOSCALE_INTERVAL": "0.5", "MODELYARD_AUTOSCALE_WINDOW": "0",
               **self.env, "KUBECONFIG": str(self.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)  # never the in-cluster config in a test
        log = open(self.log_path, "ab")
        command = Path(sys.executable).with_name("modelyard")
        self.process = subprocess.Popen(
            [str(command), "operator", "--namespace", NAMESPACE, "--liveness", ""],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def kill(self) -> None:
        """A crash: no clean shutdown."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
