"""The model registry (the mimOE mModelStore API) at /store/v1 and /mimik-ai/store/v1."""
from __future__ import annotations

import os
import re

import falcon

from modelyard.server.http import multipart

from modelyard.server.api.store import uploads
from modelyard.server.registry import derive
from modelyard.server.registry import store as st
from modelyard.server.http.bodies import RawBody, read_model
from modelyard.server.settings import Settings
from modelyard.server.http.errors import ApiError, bad_request
from modelyard.server.api.store.schema import CreateModel, UpdateModel, parse_bool, parse_kind

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
        body = read_model(req, CreateModel, self.settings.max_body_size)
        model, created = self.store.create(body.fields())
        resp.status = falcon.HTTP_201 if created else falcon.HTTP_200
        resp.media = model

    def on_put(self, req, resp):
        body = read_model(req, UpdateModel, self.settings.max_body_size)
        changes = body.changes(self.store.get(body.id)["kind"])
        resp.media = self.store.update(body.id, changes)


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

    # The same headers without the body (Falcon leaves the body out of a HEAD answer).
    on_head = on_get

    def on_delete(self, req, resp, model_id):
        self.store.delete(model_id)
        resp.status = falcon.HTTP_204

    def _send_file(self, req, resp, model: dict) -> None:
        if not model["readyToUse"]:
            raise bad_request(f"Model '{model['id']}' has no complete file yet (readyToUse is false)")
        path = self.store.file_path(model["id"])
        # Opened first and sized from the open file: a file registered by path is checked
        # against its record once open, so what is sent is the file that was verified.
        f = self.store.open_file(model["id"])
        size = os.fstat(f.fileno()).st_size
        start, end = 0, size - 1
        resp.accept_ranges = "bytes"
        # The file's sha256 names its content exactly: a strong validator for If-Range.
        resp.etag = f'"{model["sha256"]}"'
        rng = _byte_range(req.get_header("Range"), size)
        if_range = req.get_header("If-Range")
        if rng is not None and (if_range is None or if_range == resp.etag):
            if rng == UNSATISFIABLE:
                raise falcon.HTTPRangeNotSatisfiable(size)
            start, end = rng
            resp.status = falcon.HTTP_206
            resp.content_range = (start, end, size)
        resp.content_type = "application/octet-stream"
        resp.downloadable_as = path.name.replace("model", model["id"], 1)
        f.seek(start)
        # A plain file with a length: gunicorn hands it to sendfile().
        resp.set_stream(f, end - start + 1)


UNSATISFIABLE = (-1, -1)
_RANGE_SPEC = re.compile(r"^(\d*)-(\d*)$")


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `bytes` range, UNSATISFIABLE, or None to send it all.

    RFC 9110, section 14: a unit other than bytes, or a ranges-specifier that does not
    parse (a reversed range, junk), is ignored; so is a request for several ranges,
    which a server may answer whole instead of as multipart/byteranges. A valid range
    that starts past the end, or a suffix of zero bytes, cannot be satisfied (416).
    """
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _RANGE_SPEC.match(spec.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # a suffix: the last N bytes
        length = int(last)
        return (max(size - length, 0), size - 1) if length and size else UNSATISFIABLE
    start = int(first)
    if last != "" and int(last) < start:
        return None  # invalid, so ignored
    if start >= size:
        return UNSATISFIABLE
    return start, size - 1 if last == "" else min(int(last), size - 1)


class Upload:
    """/models/{id}/upload: multipart, streamed to disk with the sha256 computed on the way."""

    def __init__(self, store: st.Store, settings: Settings):
        self.store = store
        self.settings = settings

    def on_post(self, req, resp, model_id):
        # A Content-Length over the limit is a 413 here; a chunked body, at the byte past it.
        body = RawBody(req.env, req.content_length, self.settings.max_upload_size)
        if not (req.content_type or "").startswith("multipart/form-data"):
            raise ApiError(
                415, "Upload with Content-Type multipart/form-data and the file in field 'file'"
            )
        self.store.get(model_id)  # 404 before reading any of the body
        try:
            boundary = multipart.boundary_of(req.content_type)
            with self.store.transfer(model_id) as transfer:
                received = uploads.receive(body, boundary, transfer, UPLOAD_FIELDS)
                if "model" not in received and "mmproj" not in received:
                    raise bad_request("Missing form field 'file' with the model file")
                transfer.commit()
            resp.media = derive.settle(self.store, model_id)  # an llm whose file pools is an embed
        except multipart.MultipartError as exc:
            raise bad_request(f"Malformed or truncated upload: {exc}") from None


class BadModelPath:
    """Anything under /models/ that no route matched: an id with '/' in it, as a traversal has."""

    def __call__(self, req, resp, **kwargs):
        raise bad_request(f"Invalid model path {req.path!r}: a model id cannot contain '/'")


def schema_error(req, resp, exc, params):
    raise bad_request(str(exc))

