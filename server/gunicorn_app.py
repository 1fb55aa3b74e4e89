"""Run the Falcon app under gunicorn: one gthread worker, many threads.

One worker process keeps one copy of each loaded model in memory; its threads do the
I/O. The app is built in the worker (after the fork), so engine threads start there.
"""
from __future__ import annotations

import sys

from gunicorn.app.base import BaseApplication

from modelyard.server.settings import Settings
from modelyard.server.registry.blobs import Blobs
from modelyard.server.registry.store import Store

ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms'


class ModelyardServer(BaseApplication):
    def __init__(self, settings: Settings):
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options = {
            "bind": f"[{s.host}]:{s.port}" if ":" in s.host else f"{s.host}:{s.port}",
            "workers": 1,
            "worker_class": "gthread",
            "threads": s.http_threads,
            # Downloads and token streams run for minutes; the gthread worker keeps
            # heartbeating while its threads work, so this only catches a stuck worker.
            "timeout": 120,
            "graceful_timeout": 10,
            "keepalive": 5,
            "accesslog": "-",
            "errorlog": "-",
            "access_log_format": ACCESS_LOG_FORMAT,
            "loglevel": "info",
            "when_ready": self._announce,
            # One socket path per user would clash between servers on one machine.
            "control_socket_disable": True,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def _announce(self, arbiter) -> None:
        s = self.settings
        auth = "an API key" if s.api_key else "no API key (loopback only)"
        print(
            f"modelyard: serving store {s.store} at http://{s.host}:{s.port} with {auth}",
            file=sys.stderr,
            flush=True,
        )

    def load(self):
        from modelyard.server.app import create_app

        return create_app(self.settings)


def run_server(settings: Settings) -> int:
    store = Store(settings.store)
    if store.read_only:
        print(f"modelyard: store {settings.store} is read-only; registry changes are refused",
              file=sys.stderr)
    else:
        for path in store.recover() + Blobs(store.root).recover():
            print(f"modelyard: removed leftover {path}", file=sys.stderr)
    ModelyardServer(settings).run()
    return 0
