"""The router's ASGI app: the cluster-wide lists, /healthz, /metrics, and a sink that proxies
everything else to the pods. `create_app` wires it; `run` serves it with uvicorn."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import falcon
import falcon.asgi

from modelyard.server.http.jsonio import use_for_responses
from modelyard.server.router import lists
from modelyard.server.router.cluster import Cluster
from modelyard.server.router.keys import RouterKey
from modelyard.server.router.metrics import RouterMetrics
from modelyard.server.router.pods import Pods
from modelyard.server.router.proxy import Proxy, Scaler
from modelyard.server.router.settings import RouterSettings

log = logging.getLogger(__name__)


class _List:
    """A list route answered for the whole cluster; other methods on it (POST /v1/models
    pre-loads a model) go to the Model's pods."""

    keyed = frozenset({"GET"})

    def __init__(self, cluster: Cluster, render, proxy: Proxy) -> None:
        self.cluster = cluster
        self.render = render
        self.proxy = proxy

    async def on_get(self, req, resp) -> None:
        resp.media = self.render(lists.views(self.cluster.entries()), req.params)

    async def on_post(self, req, resp) -> None:
        await self.proxy(req, resp)


class _Health:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def on_get(self, req, resp) -> None:
        resp.media = {"status": "ok", "synced": all(self.cluster.synced.values())}


class _Metrics:
    keyed = frozenset({"GET"})  # it names every Model and pod

    def __init__(self, metrics: RouterMetrics) -> None:
        self.metrics = metrics

    async def on_get(self, req, resp) -> None:
        resp.content_type = "text/plain; version=0.0.4; charset=utf-8"
        resp.data = self.metrics.render()


class _OllamaRoot:
    """Ollama clients probe `/` before anything else."""

    async def on_get(self, req, resp) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "Ollama is running"

    async def on_head(self, req, resp) -> None:
        resp.content_type = falcon.MEDIA_TEXT


def create_app(settings: RouterSettings, cluster: Cluster, pods: Pods, scale: Scaler,
               metrics: RouterMetrics | None = None, families=None) -> falcon.asgi.App:
    if families is None:
        from modelyard.server.api.families import FAMILIES as families
    metrics = metrics or RouterMetrics()
    proxy = Proxy(settings, cluster, metrics, pods, scale)
    app = falcon.asgi.App(middleware=[RouterKey(settings.api_key, proxy.voices)])
    app.req_options.strip_url_path_trailing_slash = True
    use_for_responses(app)
    for family in families:
        for template, route in family.templates():
            if route.lists_models is not None:
                app.add_route(template, _List(cluster, route.lists_models, proxy))
    app.add_route("/", _OllamaRoot())
    app.add_route("/healthz", _Health(cluster))
    app.add_route("/metrics", _Metrics(metrics))
    app.add_sink(proxy, "/")
    return app


class HangUps:
    """ASGI middleware: when the client hangs up after sending its request, the request's task
    is cancelled, so a held request stops waiting and a relayed stream closes its pod
    connection (the pod then cancels the generation). Servers make `send` a no-op after a
    disconnect, so without this a stream would run to its end for nobody."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        task = asyncio.current_task()
        gone = asyncio.Event()
        watcher: asyncio.Task | None = None

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            task.cancel()

        async def wrapped_receive() -> dict[str, Any]:
            nonlocal watcher
            if watcher is not None:  # the body is read: only a disconnect can come
                await gone.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body"):
                watcher = asyncio.ensure_future(watch())
            return message

        try:
            await self.app(scope, wrapped_receive, send)
        except asyncio.CancelledError:
            if not gone.is_set():
                raise
            task.uncancel()
        finally:
            if watcher is not None:
                watcher.cancel()
