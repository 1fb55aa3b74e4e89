"""A streamed response fed by a worker thread: long work (a pull, a push, a create) runs
off the request thread and sends progress events as it goes.

The WSGI server calls `close()` when the response ends or the client goes away; that
sets the work's cancel flag and waits for it to clean up, so disconnecting cancels.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Callable, Iterator

log = logging.getLogger(__name__)

# How long close() waits for the work to notice the cancel and clean up.
CLEANUP_TIMEOUT = 60.0
_END = object()

Work = Callable[[Callable[[dict], None], threading.Event], None]


class WorkerStream:
    """Iterates `encode(event)` for each event `work(emit, cancel)` emits; an exception
    becomes a last event, `on_error(exc)`.

    `cancel` may be an event the work already watches (a store transfer's). With `ping`,
    a silence of `ping_interval` seconds sends those bytes: a dead client is noticed only
    when a write fails, and a slow source must not look like one to a proxy."""

    def __init__(self, work: Work, encode: Callable[[dict], bytes],
                 on_error: Callable[[BaseException], dict], name: str = "worker",
                 cancel: threading.Event | None = None, ping: bytes | None = None,
                 ping_interval: float = 5.0):
        self.cancel = cancel or threading.Event()
        self.events: queue.Queue = queue.Queue()
        self._encode, self._on_error = encode, on_error
        self._ping, self._ping_interval = ping, ping_interval
        self.worker = threading.Thread(target=self._run, args=(work,), name=name, daemon=True)
        self.worker.start()

    def _run(self, work: Work) -> None:
        try:
            work(self.events.put, self.cancel)
        except Exception as exc:
            if getattr(exc, "code", 500) >= 500:
                log.exception("%s failed", self.worker.name)
            self.events.put(self._on_error(exc))
        finally:
            self.events.put(_END)

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                event = self.events.get(timeout=self._ping_interval if self._ping else None)
            except queue.Empty:
                yield self._ping
                continue
            if event is _END:
                return
            yield self._encode(event)

    def close(self) -> None:
        self.cancel.set()  # no effect when the work has finished
        self.worker.join(CLEANUP_TIMEOUT)


def run_to_end(work: Work) -> dict | None:
    """The same work without a stream, in the request thread: its last event (exceptions
    propagate to the route's error handling)."""
    last: list[dict] = []

    def keep(event: dict) -> None:
        last[:] = [event]

    work(keep, threading.Event())
    return last[0] if last else None
