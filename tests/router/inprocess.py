"""The router's real app in this process (Falcon's test client), its cluster state fed by hand,
and a stand-in pod behind it (an ASGI app reached through httpx's ASGI transport)."""
from __future__ import annotations

import falcon.testing
import httpx

from modelyard.server.router.app import create_app
from modelyard.server.router.cluster import Cluster
from modelyard.server.router.settings import RouterSettings

POD_KEY = "pod-key"
POD = "127.0.0.1:8083"


async def pod(scope, receive, send):
    """A pod that checks its own key, as a Model's pods do, and answers a small JSON body."""
    while (await receive()).get("more_body"):
        pass
    headers = {k.lower(): v for k, v in scope["headers"]}
    ok = headers.get(b"authorization") == f"Bearer {POD_KEY}".encode()
    body = b'{"model": "tiny"}' if ok else b'{"error": {"code": 401, "message": "Invalid API key"}}'
    await send({"type": "http.response.start", "status": 200 if ok else 401,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def app_client(key: str = "") -> falcon.testing.TestClient:
    """Model `tiny` (namespace ai) with one ready pod, the stand-in."""
    cluster = Cluster(16, 1.25)
    cluster.replace("models", [{"metadata": {"name": "tiny", "namespace": "ai", "generation": 1},
                                "spec": {"kind": "llm"},
                                "status": {"phase": "Ready", "selector": "app=tiny", "download": {"totalSize": 9}}}])
    cluster.replace("pods", [{"metadata": {"name": "p", "namespace": "ai", "labels": {"app": "tiny"}},
                              "status": {"podIP": POD.split(":")[0],
                                         "conditions": [{"type": "Ready", "status": "True"}]}}])
    pods = httpx.AsyncClient(transport=httpx.ASGITransport(app=pod))

    async def no_scale(namespace: str, name: str) -> None:
        raise AssertionError("nothing is at zero here")

    return falcon.testing.TestClient(create_app(RouterSettings(api_key=key), cluster, pods, no_scale))
