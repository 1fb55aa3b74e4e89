"""The model registry (the mimOE mModelStore API) at /store/v1 and /mimik-ai/store/v1."""
from __future__ import annotations

import falcon

from modelyard.server.http import multipart

from modelyard.server.api.store import uploads
from modelyard.server.registry import store as st
from modelyard.server.http.bodies import RawBody, read_json_object, too_large
from modelyard.server.settings import Settings
from modelyard.server.http.errors import ApiError, bad_request
from modelyard.server.api.store.schema import SchemaError, parse_bool, parse_create, parse_kind, parse_update

PREFIXES = ("/store/v1", "/mimik-ai/store/v1")
# Form fields of an upload, and the store role each one fills.
UPLOAD_FIELDS = {"file": "model", "mmproj": "mmproj"}


class Models:
    """/models: list, create, update."""

    def __init__(self, store: st.Store, settings: Settings):
        self.store = store
        self.settings = settings

    def on_get(self, req, resp):
        kind = parse_kind(req.get_param("kind"))
        ready = parse_bool("ready", req.get_param("ready"))
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self.store.list_json(kind=kind, ready=ready)

    def on_post(self, req, resp):
        fields = parse_create(read_json_object(req, self.settings.max_body_size))
        model, created = self.store.create(fields)
        resp.status = falcon.HTTP_201 if created else falcon.HTTP_200
        resp.media = model

    def on_put(self, req, resp):
        body = read_json_object(req, self.settings.max_body_size)
        model_id, changes = parse_update(body, lambda i: self.store.get(i)["kind"])
        resp.media = self.store.update(model_id, changes)


class Model:
    """/models/{id}: metadata, the file itself with ?alt=media, delete."""

    def __init__(self, store: st.Store):
        self.store = store

    def on_get(self, req, resp, model_id):
        model = self.store.get(model_id)
        alt = req.get_param("alt")
        if alt is None:
            resp.media = model
        elif alt == "media":
            self._send_file(req, resp, model)
        else:
            raise bad_request(f"Query parameter 'alt' must be 'media', got '{alt}'")

    def on_delete(self, req, resp, model_id):
        self.store.delete(model_id)
        resp.status = falcon.HTTP_204

    def _send_file(self, req, resp, model: dict) -> None:
        if not model["readyToUse"]:
            raise bad_request(f"Model '{model['id']}' has no complete file yet (readyToUse is false)")
        path = self.store.file_path(model["id"])
        size = path.stat().st_size
        start, end = 0, size - 1
        resp.accept_ranges = "bytes"
        if req.range is not None and size > 0:
            start, end = _resolve_range(req.range, size)
            resp.status = falcon.HTTP_206
            resp.content_range = (start, end, size)
        resp.content_type = "application/octet-stream"
        resp.downloadable_as = path.name.replace("model", model["id"], 1)
        f = open(path, "rb")
        f.seek(start)
        # A plain file with a length: gunicorn hands it to sendfile().
        resp.set_stream(f, end - start + 1)


def _resolve_range(rng: tuple[int, int], size: int) -> tuple[int, int]:
    """Falcon's (first, last) with -1 for open ends and a negative first for a suffix."""
    first, last = rng
    if first < 0:
        start, end = max(size + first, 0), size - 1
    else:
        start, end = first, size - 1 if last == -1 else min(last, size - 1)
    if start >= size or start > end:
        raise falcon.HTTPRangeNotSatisfiable(size)
    return start, end


class Upload:
    """/models/{id}/upload: multipart, streamed to disk with the sha256 computed on the way."""

    def __init__(self, store: st.Store, settings: Settings):
        self.store = store
        self.settings = settings

    def on_post(self, req, resp, model_id):
        limit = self.settings.max_upload_size
        if req.content_length is not None and req.content_length > limit:
            raise too_large(req.content_length, limit)
        if not (req.content_type or "").startswith("multipart/form-data"):
            raise ApiError(
                415, "Upload with Content-Type multipart/form-data and the file in field 'file'"
            )
        if req.content_length is None:
            # The body is read to its length; curl -F and every form client send one.
            raise ApiError(411, "Send the upload with a Content-Length header (not chunked)")
        self.store.get(model_id)  # 404 before reading any of the body
        try:
            boundary = multipart.boundary_of(req.content_type)
            with self.store.transfer(model_id) as transfer:
                body = RawBody(req.env, req.content_length)
                received = uploads.receive(body, boundary, transfer, UPLOAD_FIELDS)
                if "model" not in received and "mmproj" not in received:
                    raise bad_request("Missing form field 'file' with the model file")
                resp.media = transfer.commit()
        except multipart.MultipartError as exc:
            raise bad_request(f"Malformed or truncated upload: {exc}") from None


class BadModelPath:
    """Anything under /models/ that no route matched: an id with '/' in it, as a traversal has."""

    def __call__(self, req, resp, **kwargs):
        raise bad_request(f"Invalid model path {req.path!r}: a model id cannot contain '/'")


def _schema_error(req, resp, exc, params):
    raise bad_request(str(exc))


def add_routes(app: falcon.App, store: st.Store, settings: Settings) -> None:
    models, model, upload = Models(store, settings), Model(store), Upload(store, settings)
    for prefix in PREFIXES:
        app.add_route(f"{prefix}/models", models)
        app.add_route(f"{prefix}/models/{{model_id}}", model)
        app.add_route(f"{prefix}/models/{{model_id}}/upload", upload)
        app.add_sink(BadModelPath(), f"{prefix}/models/")
    app.add_error_handler(SchemaError, _schema_error)
