"""POST /models/{id}/download (mModelStore API): a download into the store, streamed as SSE.

Everything that can be refused is refused before the stream starts, as a normal JSON
error: the body, the id, the model, the vlm projector rule, a busy or read-only store.
Then the model's transfer lock is taken in the responder and handed to a worker thread,
which downloads and releases it; the response iterates the worker's events.
"""
from __future__ import annotations

import json
import logging
import queue
import threading

import falcon

from modelyard.server.registry import fetch
from modelyard.server.shared import facts
from modelyard.server.registry import store as st
from modelyard.server.http.bodies import read_model
from modelyard.server.settings import Settings
from modelyard.server.http.errors import bad_request
from modelyard.server.api.store.schema import DownloadModel
from modelyard.server.api.store.models import PREFIXES
from modelyard.server.http.sse import stream_events

log = logging.getLogger(__name__)

# A dead client is noticed only when a write fails, so silences get a comment line.
PING_INTERVAL = 5.0
# How long the response waits for the worker to clean up after a disconnect. The worker
# checks the cancel flag at every chunk; a stalled read ends at fetch.TIMEOUT.
CLEANUP_TIMEOUT = 60.0
_END = object()


class Download:
    def __init__(self, store: st.Store, settings: Settings):
        self.store = store
        self.settings = settings

    def on_post(self, req, resp, model_id):
        body = read_model(req, DownloadModel, self.settings.max_body_size)
        url, mmproj_url = body.url, body.mmprojUrl
        model = self.store.get(model_id)  # 400 for a bad id, 404 for an unknown model
        try:
            sources = fetch.plan_sources(url, mmproj_url)
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        projector = model["kind"] == "vlm" and self.store.file_path(model_id, "mmproj").exists()
        problem = facts.vlm_problem(model_id, model["kind"], "mmproj" in sources, projector)
        if problem:
            raise bad_request(problem)
        # Built before the response starts: 409 as JSON when busy or read-only.
        stream_events(resp, DownloadStream(self.store, model_id, sources))


class DownloadStream:
    """The response body: SSE events from a worker thread that owns the transfer.

    The WSGI server calls `close()` when the response ends or the client goes away;
    that cancels the download and waits until its partial files are removed.
    """

    def __init__(self, store: st.Store, model_id: str, sources: dict[str, fetch.Source]):
        self._context = store.transfer(model_id)
        self.transfer = self._context.__enter__()  # raises TransferBusy / ReadOnlyStore
        self.sources = sources
        self.events: queue.Queue = queue.Queue()
        self.worker = threading.Thread(target=self._work, name=f"download-{model_id}",
                                       daemon=True)
        self.worker.start()

    def _work(self) -> None:
        outcome = None
        try:
            model = fetch.download_into(self.transfer, self.sources, on_progress=self.events.put)
            outcome = {"done": True, "model": model}
        except Exception as exc:
            outcome = fetch.error_event(exc)
            if outcome["error"]["code"] >= 500:
                log.exception("download of %s failed", self.transfer.model_id)
            else:
                log.warning("download of %s failed: %s", self.transfer.model_id, exc)
        finally:
            # Release first (removing partials), so the client's next request after the
            # last event never finds the model busy.
            self._context.__exit__(None, None, None)
            if outcome is not None:
                self.events.put(outcome)
            self.events.put(_END)

    def __iter__(self):
        while True:
            try:
                event = self.events.get(timeout=PING_INTERVAL)
            except queue.Empty:
                yield b": ping\n\n"
                continue
            if event is _END:
                return
            yield b"data: " + json.dumps(event).encode() + b"\n\n"

    def close(self) -> None:
        self.transfer.cancel.set()  # no effect when the worker has finished
        self.worker.join(CLEANUP_TIMEOUT)


def add_routes(app: falcon.App, store: st.Store, settings: Settings) -> None:
    download = Download(store, settings)
    for prefix in PREFIXES:
        app.add_route(f"{prefix}/models/{{model_id}}/download", download)
