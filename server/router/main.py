"""`modelyard router`: watch the cluster, serve the app with uvicorn on one event loop."""
from __future__ import annotations

import asyncio
import logging

import httpx
import uvicorn

from modelyard.server.router.app import HangUps, create_app
from modelyard.server.router.cluster import Cluster
from modelyard.server.router.kube import Watcher, load_api_client
from modelyard.server.router.settings import RouterSettings

log = logging.getLogger("modelyard.router")


def client() -> httpx.AsyncClient:
    """The pods' client: no read time-out (a generation takes as long as it takes; the pods
    send keep-alives), a short connect time-out (a dead pod is tried again elsewhere)."""
    return httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0),
                             limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
                             trust_env=False)


async def serve(settings: RouterSettings) -> None:
    loop = asyncio.get_running_loop()
    cluster = Cluster(settings.replication, settings.load_factor)

    def sink(kind: str, event: str, obj, namespace: str | None) -> None:
        if event == "LIST":
            cluster.replace(kind, obj, namespace)
        else:
            cluster.apply(kind, event, obj)

    api_client = load_api_client()
    watchers = [Watcher(ns, loop, sink, api_client) for ns in settings.watched()]
    for watcher in watchers:
        watcher.start()

    async def scale(namespace: str, name: str) -> None:
        await asyncio.to_thread(watchers[0].scale_to_one, namespace, name)

    async with client() as pods:
        try:
            await serve_app(settings, cluster, pods, scale)
        finally:
            for watcher in watchers:
                watcher.stop()


async def serve_app(settings: RouterSettings, cluster: Cluster, pods: httpx.AsyncClient, scale) -> None:
    """The app on uvicorn until SIGTERM or SIGINT (uvicorn's own handlers)."""
    app = HangUps(create_app(settings, cluster, pods, scale))
    config = uvicorn.Config(app, host=settings.host, port=settings.port, lifespan="off",
                            log_level="debug" if settings.verbose else "info", access_log=False, timeout_graceful_shutdown=5)
    await uvicorn.Server(config).serve()


def run(settings: RouterSettings) -> int:
    logging.basicConfig(level=logging.DEBUG if settings.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(settings))
    return 0
