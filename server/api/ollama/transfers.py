"""Ollama's model transfers: /api/pull, /api/push, /api/create, and /api/blobs/{digest}.

Pull, push and create stream NDJSON progress by default (`stream: false`: one object at
the end). What can be refused is refused before the stream starts, as a plain
`{"error": ...}` with its status: a bad body, an unknown model, a name the registry or
the hub does not have. A failure after that is a last `{"error": ...}` line. Closing
the connection cancels the work, and a cancelled pull or create leaves no model behind.
"""
from __future__ import annotations

import falcon

from modelyard.server.api.family import NDJSON
from modelyard.server.api.ollama import bodies, templates
from modelyard.server.api.ollama.modelfile import ModelfileError, parse
from modelyard.server.api.ollama.schema import CreateBody, PullBody
from modelyard.server.http.bodies import RawBody
from modelyard.server.http.errors import bad_request
from modelyard.server.http import jsonio
from modelyard.server.http.worker_stream import WorkerStream, Work, run_to_end
from modelyard.server.registry import allowed, derive, pulls
from modelyard.server.registry.blobs import Blobs, digest_hex
from modelyard.server.registry.errors import StoreError
from modelyard.server.registry.store import Store, check_id
from modelyard.server.settings import Settings
from modelyard.server.shared import names



def _error_line(exc: BaseException) -> dict:
    if isinstance(exc, StoreError):
        return {"error": str(exc)}
    return {"error": f"{type(exc).__name__}: {exc}"}


def _respond(resp, stream: bool, work: Work, name: str) -> None:
    if not stream:
        resp.media = run_to_end(work) or {"status": "success"}
        return
    resp.content_type = NDJSON
    resp.stream = WorkerStream(work, jsonio.line, _error_line, name=name)


def _check_template(template: str | None, what: str) -> None:
    """A 400 for a template over the renderer's limits, before anything is stored."""
    try:
        templates.check(template or "")
    except templates.TemplateLimit as exc:
        raise bad_request(f"{what}: {exc}") from None


class Pull:
    def __init__(self, store: Store, settings: Settings):
        self.store, self.settings = store, settings

    def on_post(self, req, resp):
        body = bodies.read(req, PullBody, self.settings.max_body_size)
        self.store.check_writable()
        check_id(names.to_id(body.target))
        # Planned before the response starts: an unknown repo or tag is a 404 here.
        plan = pulls.plan_pull(body.target, body.insecure, self.settings.ollama_registry)
        _check_template(plan.ollama.get("template"), "The model's template layer")
        _respond(resp, body.stream, lambda emit, cancel: self._pull(plan, emit, cancel),
                 f"pull-{plan.model_id}")

    def _pull(self, plan, emit, cancel) -> None:
        emit({"status": "pulling manifest"})
        pulls.pull(self.store, plan, emit, cancel)


class Push:
    def __init__(self, store: Store, settings: Settings):
        self.store, self.settings = store, settings

    def on_post(self, req, resp):
        body = bodies.read(req, PullBody, self.settings.max_body_size)
        self.store.get(names.to_id(body.target))  # 404 before the stream
        _respond(resp, body.stream,
                 lambda emit, cancel: pulls.push(self.store, body.target, emit, cancel, body.insecure),
                 f"push-{names.to_id(body.target)}")


class Create:
    def __init__(self, store: Store, blobs: Blobs, settings: Settings):
        self.store, self.blobs, self.settings = store, blobs, settings
        self.folders = allowed.for_settings(settings)  # an ADAPTER line's absolute path

    def on_post(self, req, resp):
        body = bodies.read(req, CreateBody, self.settings.max_body_size)
        recipe = self.recipe(body)
        derive.check(self.store, self.blobs, recipe)
        _respond(resp, body.stream,
                 lambda emit, cancel: derive.create(self.store, self.blobs, recipe, emit, cancel),
                 f"create-{recipe.model_id}")

    def recipe(self, body: CreateBody) -> derive.Recipe:
        fields = body.model_dump(by_alias=True, exclude_none=True)
        if body.modelfile:
            try:
                fields = {**parse(body.modelfile), **{k: v for k, v in fields.items() if k != "modelfile"}}
            except ModelfileError as exc:
                raise bad_request(f"Modelfile: {exc}") from None
        refs = [*(body.adapters or {}).values(), *([fields["adapter"]] if "adapter" in fields else [])]
        if len(refs) > 1:
            raise bad_request("One adapter per model (llama.cpp applies a set per request): 'adapters' "
                              "or the Modelfile's ADAPTER, with one file")
        for digest in (body.adapters or {}).values():
            digest_hex(digest)  # 400 for a malformed digest
        base, files = fields.get("from"), fields.get("files") or {}
        if bool(base) == bool(files):
            raise bad_request("Send 'from' (a model) or 'files' (uploaded blobs), one of the two")
        for digest in files.values():
            digest_hex(digest)  # 400 for a malformed digest
        _check_template(fields.get("template"), "'template'")
        license = fields.get("license")
        ollama = {"system": fields.get("system"), "template": fields.get("template"),
                  "parameters": fields.get("parameters"),
                  "license": "\n".join(license) if isinstance(license, list) else license}
        adapter = derive.adapter_file(self.store, self.blobs, self.folders, refs[0]) if refs else None
        return derive.Recipe(names.to_id(body.target), base=names.to_id(base) if base else None,
                             files=derive.blob_roles(self.blobs, files) if files else {},
                             ollama={k: v for k, v in ollama.items() if v is not None},
                             quantize=fields.get("quantize"), adapter=adapter)


class Blob:
    """HEAD: 200 when the blob is here, 404 when not. POST: the raw bytes, verified."""

    def __init__(self, blobs: Blobs, store: Store, settings: Settings):
        self.blobs, self.store, self.settings = blobs, store, settings

    def on_head(self, req, resp, digest):
        resp.status = falcon.HTTP_200 if self.blobs.has(digest) else falcon.HTTP_404

    def on_post(self, req, resp, digest):
        digest_hex(digest)
        self.store.check_writable()
        # Chunked as well: `ollama create` streams a local file with no Content-Length.
        body = RawBody(req.env, req.content_length, self.settings.max_upload_size)

        def read(view: memoryview) -> int:
            n = body.readinto(view)
            if n == 0 and body.remaining:
                raise bad_request(f"The body ended {body.remaining} bytes short of its Content-Length")
            return n

        self.blobs.receive(digest, read)
        resp.status = falcon.HTTP_201

