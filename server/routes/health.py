"""Liveness and readiness."""
from __future__ import annotations

from typing import Callable

import falcon


class Healthz:
    def on_get(self, req, resp):
        resp.media = {"status": "ok"}


class Readyz:
    """200 once the models named by --preload are loaded, 503 before."""

    def __init__(self, is_ready: Callable[[], bool]):
        self.is_ready = is_ready

    def on_get(self, req, resp):
        ready = self.is_ready()
        resp.status = falcon.HTTP_200 if ready else falcon.HTTP_503
        resp.media = {"status": "ready" if ready else "loading"}


def add_routes(app: falcon.App, is_ready: Callable[[], bool]) -> None:
    app.add_route("/healthz", Healthz())
    app.add_route("/readyz", Readyz(is_ready))
