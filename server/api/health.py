"""Liveness and readiness: /healthz and /readyz, and KServe's /v2/health/live and /ready.

One readiness answer for both: ready once the models named by --preload are loaded.
A preload that failed says why, so `kubectl describe pod` shows the reason.
"""
from __future__ import annotations

import falcon


class Live:
    def __init__(self, body: dict):
        self.body = body

    def on_get(self, req, resp):
        resp.media = self.body


class Ready:
    """200 once the --preload models are loaded, 503 before (or after a failed preload)."""

    def __init__(self, manager, ready_body, waiting_body):
        self.manager = manager
        self.ready_body = ready_body
        self.waiting_body = waiting_body

    def on_get(self, req, resp):
        ready = self.manager.is_ready()
        resp.status = falcon.HTTP_200 if ready else falcon.HTTP_503
        resp.media = dict(self.ready_body if ready else self.waiting_body)
        errors = self.manager.preload_errors()
        if errors and not ready:
            resp.media["errors"] = errors

