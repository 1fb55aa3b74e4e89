"""The router's integration tier: KMock as the API server (in a thread of its own), Pods as
objects with loopback IPs built by the operator's own builder, a real `modelyard serve` for
each pod (tests/cluster/podservers.py), and the real `modelyard router` process between."""
from __future__ import annotations

import asyncio
import base64
import importlib.util
import threading
from pathlib import Path
from typing import Any

import pytest

from cluster.podservers import PodServers, make_pod_model
from modelyard.operator import builders
from modelyard.operator.settings import OperatorSettings
from router.process import Router

HERE = Path(__file__).parent
KEY = "router-test-key"
# Pod addresses of this tier: loopback, apart from the cluster tier's 127.16.0.0/16.
POD_NET = "127.23.0."


def _kmock_cluster():
    """tests/operator/kmock_cluster.py (its folder's name is the standard library's `operator`)."""
    path = HERE.parent / "operator" / "kmock_cluster.py"
    spec = importlib.util.spec_from_file_location("router_kmock_cluster", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


kc = _kmock_cluster()
NAMESPACE = kc.NAMESPACE


class KMockThread:
    """KMock on its own event loop, so module-scoped fixtures and plain tests can share it."""

    def __init__(self) -> None:
        import kmock

        self._kmock = kmock
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with kc.Emulator() as emulator, self._kmock.Server(emulator):
            self.emulator = emulator
            self.port = emulator.servers[0].port
            kc.declare(emulator, {})
            models = "modelyard.dev/v1alpha1/models"
            info = emulator.resources[models]
            emulator.resources[models] = self._kmock.ResourceInfo(
                kind=info.kind, namespaced=True, verbs=info.verbs, subresources={"status", "scale"})
            self.kubectl = kc.Kubectl(emulator, {})
            self._ready.set()
            await self._stop.wait()

    def start(self) -> "KMockThread":
        self._thread.start()
        assert self._ready.wait(30), "KMock did not start"
        return self

    def call(self, coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


class Cluster:
    """What the test does to the cluster, as kubectl and the controllers would."""

    def __init__(self, kmock: KMockThread) -> None:
        self.kmock = kmock
        self.k = kmock.kubectl
        self._ips = iter(range(1, 250))

    def model(self, name: str, replicas: int | None, **spec: Any) -> dict[str, Any]:
        body = {"apiVersion": "modelyard.dev/v1alpha1", "kind": "Model", "metadata": {"name": name},
                "spec": {"kind": "llm", "version": "1.0.0", "source": {"url": f"https://example.com/{name}.gguf"},
                         "gguf": {"initContextSize": 512}, **spec}}
        if replicas is not None:
            body["spec"]["replicas"] = replicas
        model = self.kmock.call(self.k.create("models", body))
        secret = builders.build_api_key_secret(model, KEY)
        secret["data"] = {"key": base64.b64encode(KEY.encode()).decode()}
        self.kmock.call(self.k.create("secrets", secret))
        status = {"phase": "Ready", "selector": builders.pod_selector(model), "download": {"totalSize": 1234},
                  "conditions": [{"type": "Downloaded", "status": "True", "reason": "Downloaded"}]}
        self.kmock.call(self.k.patch("models", name, {"status": status}, sub="status"))
        return self.get("models", name)

    def pod(self, model: dict[str, Any], ready: bool = False) -> str:
        """An inference pod as the Deployment would make it, on the next loopback address."""
        deployment = builders.build_deployment(model, OperatorSettings(server_image="test:1"), source_hash="h")
        template = deployment["spec"]["template"]
        name = f"{model['metadata']['name']}-{next(self._ips)}"
        ip = POD_NET + name.rsplit("-", 1)[1]
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "labels": template["metadata"]["labels"]},
               "spec": template["spec"], "status": {"phase": "Running", "podIP": ip, "conditions": []}}
        self.kmock.call(self.k.create("pods", pod))
        if ready:
            self.ready(name)
        return name

    def ready(self, pod: str, ready: bool = True) -> None:
        """The kubelet's readiness probe passed (or failed)."""
        condition = {"type": "Ready", "status": "True" if ready else "False"}
        self.kmock.call(self.k.patch("pods", pod, {"status": {"conditions": [condition]}}))

    def get(self, resource: str, name: str) -> dict[str, Any] | None:
        return self.kmock.call(self.k.get(resource, name))


@pytest.fixture(scope="module")
def kmock_thread():
    kmock = KMockThread().start()
    yield kmock
    kmock.stop()


@pytest.fixture(scope="module")
def cluster(kmock_thread) -> Cluster:
    return Cluster(kmock_thread)


@pytest.fixture(scope="module")
def kubeconfig(kmock_thread, tmp_path_factory) -> Path:
    return kc.kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig", kmock_thread.port)


@pytest.fixture(scope="module")
def pod_servers(kubeconfig, tmp_path_factory):
    model = make_pod_model(tmp_path_factory.mktemp("pod-model"))
    servers = PodServers(kubeconfig, NAMESPACE, tmp_path_factory.mktemp("pods"), lambda _m: model).start()
    yield servers
    servers.stop()


@pytest.fixture(scope="module")
def router(kubeconfig, tmp_path_factory, request):
    router = Router(kubeconfig, tmp_path_factory.mktemp("router") / "router.log",
                    "--namespace", NAMESPACE, "--scale-wait", "60", "--ping-seconds", "0.5")
    router.wait_synced()
    yield router
    router.stop()
    print(router.log()[-10000:])

