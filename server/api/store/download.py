"""POST /models/{id}/download (mModelStore API): a download into the store, streamed as SSE.

Everything that can be refused is refused before the stream starts, as a normal JSON
error: the body, the id, the model, the vlm projector rule, a busy or read-only store.
Then the model's transfer lock is taken in the responder and handed to a worker thread,
which downloads and releases it; the response iterates the worker's events.
"""
from __future__ import annotations

import logging


from modelyard.server.registry import fetch
from modelyard.server.shared import facts
from modelyard.server.registry import store as st
from modelyard.server.http.bodies import read_model
from modelyard.server.settings import Settings
from modelyard.server.http.errors import bad_request
from modelyard.server.api.store.schema import DownloadModel
from modelyard.server.http.sse import PING, frame, stream_events
from modelyard.server.http.worker_stream import WorkerStream

log = logging.getLogger(__name__)

# A dead client is noticed only when a write fails, so silences get a comment line.
PING_INTERVAL = 5.0


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
        stream_events(resp, download_stream(self.store, model_id, sources))


def download_stream(store: st.Store, model_id: str, sources: dict[str, fetch.Source]) -> WorkerStream:
    """The response body: SSE events from a worker thread that owns the transfer.

    The transfer is taken here, in the responder (TransferBusy / ReadOnlyStore are JSON
    errors, not events); the worker releases it, removing partial files, before the last
    event, so the client's next request never finds the model busy. A disconnect sets
    the transfer's cancel flag, which the download checks at every chunk."""
    context = store.transfer(model_id)
    transfer = context.__enter__()

    def work(emit, cancel) -> None:
        try:
            model = fetch.download_into(transfer, sources, on_progress=emit)
        finally:
            context.__exit__(None, None, None)
        emit({"done": True, "model": model})

    def failed(exc: BaseException) -> dict:
        event = fetch.error_event(exc)
        if event["error"]["code"] < 500:
            log.warning("download of %s failed: %s", model_id, exc)
        return event

    return WorkerStream(work, frame, failed,
                        name=f"download-{model_id}", cancel=transfer.cancel, ping=PING,
                        ping_interval=PING_INTERVAL)

