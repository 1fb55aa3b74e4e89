"""The router's real app in this process (Falcon's test client), its cluster state fed by hand,
and a stand-in pod behind it: an ASGI app under uvicorn on loopback, in a thread of its own,
reached by the router's own client (aiohttp's, server/router/pods.py)."""
from __future__ import annotations

import atexit
import functools
import socket
import threading
import time

import falcon.testing
import falcon.util.sync
import uvicorn

from modelyard.server.router.app import create_app
from modelyard.server.router.cluster import Cluster
from modelyard.server.router.pods import Pods
from modelyard.server.router.settings import RouterSettings
from support.servers import free_port

POD_KEY = "pod-key"


async def pod(scope, receive, send):
    """A pod that checks its own key, as a Model's pods do, and answers a small JSON body."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = {k.lower(): v for k, v in scope["headers"]}
    ok = headers.get(b"authorization") == f"Bearer {POD_KEY}".encode()
    body = b'{"model": "tiny"}' if ok else b'{"error": {"code": 401, "message": "Invalid API key"}}'
    await send({"type": "http.response.start", "status": 200 if ok else 401,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def _serve_pod() -> str:
    """The stand-in pod on a free loopback port, for the rest of the test session."""
    port = free_port()
    config = uvicorn.Config(pod, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    threading.Thread(target=uvicorn.Server(config).run, name="stand-in-pod", daemon=True).start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.02)
    raise TimeoutError("the stand-in pod did not listen")


POD = _serve_pod()


@functools.cache
def _pods() -> Pods:
    """One session for every app here, made on the event loop of Falcon's test client (one
    asyncio Runner for the thread), closed on it when the tests end."""
    pods = falcon.util.sync.async_to_sync(Pods().__aenter__)
    atexit.register(lambda: falcon.util.sync.async_to_sync(pods.__aexit__, None, None, None))
    return pods


def _pod(i: int, address: str) -> dict:
    host, _, port = address.partition(":")
    return {"metadata": {"name": f"p{i}", "namespace": "ai", "labels": {"app": "tiny"}},
            "spec": {"containers": [{"ports": [{"name": "http", "containerPort": int(port)}]}]},
            "status": {"podIP": host, "conditions": [{"type": "Ready", "status": "True"}]}}


def app_client(key: str = "", pods: tuple[str, ...] = (POD,), woken: tuple[str, ...] = (),
               settings: RouterSettings | None = None) -> falcon.testing.TestClient:
    """Model `tiny` (namespace ai) with ready pods at `pods`, by default the stand-in; or, with
    `woken`, a Model at zero replicas whose scale-up brings ready pods at those addresses."""
    cluster = Cluster(16, 1.25)
    cluster.replace("models", [{"metadata": {"name": "tiny", "namespace": "ai", "generation": 1},
                                "spec": {"kind": "llm", **({"replicas": 0} if woken else {})},
                                "status": {"phase": "Ready", "selector": "app=tiny", "download": {"totalSize": 9}}}])
    cluster.replace("pods", [] if woken else [_pod(i, address) for i, address in enumerate(pods)])

    async def scale(namespace: str, name: str) -> None:
        assert woken, "nothing is at zero here"
        cluster.replace("pods", [_pod(i, address) for i, address in enumerate(woken)])

    settings = settings or RouterSettings(api_key=key)
    return falcon.testing.TestClient(create_app(settings, cluster, _pods(), scale))
