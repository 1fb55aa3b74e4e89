"""The thread that owns a llama.cpp context: others queue work for it and wait.

A llama_context is not thread-safe, so each engine (Scheduler, Embedder) gives it to
one thread. Both need the same life cycle: queue under a lock (refused once closing),
sleep until there is work, stop on close(), and clean up on the owner thread whatever
happens, so no client waits forever on an engine that died.
"""
from __future__ import annotations

import logging
import threading

from modelyard.server.inference.errors import EngineUnavailable

log = logging.getLogger(__name__)


class EngineClosed(EngineUnavailable):
    pass


class ContextThread:
    """Subclasses set `name`, call `_start_owner(thread_name)`, and implement
    `_has_work()` (called with the lock held), `_work()` and `_shutdown()`."""

    name: str

    def _start_owner(self, thread_name: str) -> None:
        self._cv = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    def _enqueue(self, queue, item) -> None:
        with self._cv:
            if self._closing:
                raise EngineClosed(f"model '{self.name}' is being unloaded")
            queue.append(item)
            self._cv.notify()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closing

    def close(self) -> None:
        """Stop the owner thread; it fails what is queued or running and frees the context."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join()

    def _run(self) -> None:
        try:
            self._on_start()
            while True:
                with self._cv:
                    while not self._closing and not self._has_work():
                        self._cv.wait()
                    if self._closing:
                        break
                self._work()
        except Exception:  # a bug here would hang every client: fail them loudly instead
            log.exception("engine %s: its owner thread failed", self.name)
        finally:
            self._shutdown()

    def _on_start(self) -> None:
        """Work on the context before the loop, on this thread (see Scheduler)."""

    def _has_work(self) -> bool:
        raise NotImplementedError

    def _work(self) -> None:
        raise NotImplementedError

    def _shutdown(self) -> None:
        raise NotImplementedError
