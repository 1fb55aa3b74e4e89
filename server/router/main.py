"""`modelyard router`: watch the cluster, serve the app with uvicorn on one event loop."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import uvicorn

from modelyard.server.router.app import HangUps, create_app
from modelyard.server.router.cluster import Cluster
from modelyard.server.router.kube import Watcher, load_api_client
from modelyard.server.router.pods import Pods
from modelyard.server.router.settings import RouterSettings

log = logging.getLogger("modelyard.router")


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

    async with Pods() as pods:
        try:
            await serve_app(settings, cluster, pods, scale)
        finally:
            for watcher in watchers:
                watcher.stop()


async def serve_app(settings: RouterSettings, cluster: Cluster, pods: Pods, scale) -> None:
    """The app on uvicorn until SIGTERM or SIGINT (uvicorn's own handlers)."""
    app = HangUps(create_app(settings, cluster, pods, scale))
    config = uvicorn.Config(app, host=settings.host, port=settings.port, lifespan="off",
                            log_level="debug" if settings.verbose else "info", access_log=False, timeout_graceful_shutdown=5)
    await uvicorn.Server(config).serve()


def run_on_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the router's coroutine on uvloop's event loop (libuv's: fewer system calls and less
    Python a socket event than asyncio's own), asyncio's own where uvloop is not installed."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def run(settings: RouterSettings) -> int:
    logging.basicConfig(level=logging.DEBUG if settings.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_on_loop(serve(settings))
    return 0
