"""The Mullama daemon's own routes: models (list, details, pull, load, unload, delete), the
defaults catalogue, system status and health. /api/generate, /api/chat and /api/embeddings,
which Mullama shares with Ollama, are Ollama's handlers (api/ollama/generation.py and
embeddings.py), which take and answer both shapes.

Errors here have Mullama's shape, {"error": {"message", "type", "code"}} (http/errors.py).
A model's alias is its Ollama name without `:latest` (catalogue.alias); the registry id
works wherever an alias does.
"""
from __future__ import annotations

import os
import time
from importlib.metadata import version

import falcon

from modelyard.server.api.family import NDJSON
from modelyard.server.api.metrics import Metrics
from modelyard.server.api.serving import serving
from modelyard.server.api.mullama import catalogue, system
from modelyard.server.api.mullama.schema import MullamaLoadBody, MullamaPullBody
from modelyard.server.http.bodies import read_model
from modelyard.server.api.mullama.errors import mullama_error
from modelyard.server.http.errors import ApiError
from modelyard.server.http import jsonio
from modelyard.server.http.worker_stream import WorkerStream, run_to_end
from modelyard.server.inference.dispatch import Dispatcher
from modelyard.server.inference.errors import LoadFailed
from modelyard.server.registry import allowed, formats, pulls
from modelyard.server.registry.errors import StoreError
from modelyard.server.registry.store import check_id
from modelyard.server.settings import Settings
from modelyard.server.shared import names

GGUF_KINDS = ("llm", "vlm", "embed")
# The serving fields a load names, as the registry's gguf fields.
CONTEXT, GPU_LAYERS = "initContextSize", "initGpuLayerSize"


class Daemon:
    """What the routes read and do: the store, the loaded models, the daemon's counters."""

    def __init__(self, dispatcher: Dispatcher, settings: Settings, metrics: Metrics):
        self.manager = dispatcher.manager
        self.store = dispatcher.manager.store
        self.settings = settings
        self.metrics = metrics
        self.started = time.monotonic()
        self.version = version("modelyard")
        self._meta = formats.MetadataCache()
        self.allowed = allowed.for_settings(settings)

    # ---- models ------------------------------------------------------------------------

    def view(self, name: str) -> dict:
        """The registry's view of a ready GGUF model, or a 404."""
        view = self.store.get(names.to_id(name))
        if view["kind"] not in GGUF_KINDS or not view["readyToUse"]:
            raise ApiError(404, f"Model '{name}' not found (it is not a ready GGUF model)")
        return view

    def loaded(self, model_id: str):
        item = next((m for m in self.manager.loaded() if m.id == model_id), None)
        return item if item is not None and item.engine.alive else None

    def context_size(self, model_id: str, item=None) -> int | None:
        engine = item.engine if item is not None else None
        if engine is not None:
            return engine.context_size
        return self.manager.serving_fields(model_id).get(CONTEXT)

    def entry(self, view: dict) -> dict:
        model_id = view["id"]
        item = self.loaded(model_id)
        meta = self._meta.get(model_id, self.store.file_path(model_id))
        return {"alias": catalogue.alias(model_id), "path": str(self.store.file_path(model_id)),
                "parameters": meta.get("general.parameter_count"),
                "context_size": self.context_size(model_id, item),
                "gpu_layers": int(self.manager.serving_fields(model_id).get(GPU_LAYERS) or 0),
                "is_default": self.manager.default_model() == model_id,
                "active_requests": _active(item), "loaded": item is not None, "kind": view["kind"],
                **({"serving": serving(self.manager, model_id)} if item is not None else {})}

    def detail(self, view: dict) -> dict:
        meta = self._meta.get(view["id"], self.store.file_path(view["id"]))
        return {**self.entry(view), "architecture": meta.get("general.architecture", ""),
                "vocab_size": meta.get("tokenizer.ggml.tokens.count"),
                "capabilities": catalogue.capabilities(view["kind"], meta.get("tokenizer.chat_template", ""))}

    def load(self, model_id: str, wanted: dict, set_default: bool, refuse_same: bool = True) -> dict:
        """Load with the serving fields `wanted` names; 409 when the model is loaded with them
        already (and `refuse_same`)."""
        item = self.loaded(model_id)
        if item is not None and refuse_same:
            current = {CONTEXT: self.context_size(model_id, item),
                       GPU_LAYERS: int((item.meta.get("gguf") or {}).get(GPU_LAYERS) or 0)}
            if all(current[k] == v for k, v in wanted.items()):
                raise ApiError(409, f"Model '{catalogue.alias(model_id)}' is already loaded with these settings")
        try:
            item = self.manager.load_with_serving(model_id, wanted, by="a Mullama load (POST /api/models/load)")
        except LoadFailed as exc:
            raise ApiError(500, str(exc), kind="model_error") from None
        if set_default:
            self.manager.set_default(model_id)
        entry = self.entry(self.store.get(model_id))
        return {"status": "loaded", "alias": entry["alias"], "parameters": entry["parameters"],
                "context_size": entry["context_size"], "gpu_layers": entry["gpu_layers"],
                "is_default": entry["is_default"]}

    def register(self, alias: str, path: str, mmproj: str | None) -> str:
        """Register the GGUF at `path` (and its projector) as `alias`, where it lies; returns the
        id. A loaded model registered from the same files, unchanged, is left as it is: load()
        then answers 409 for the same settings, or reloads for others, without hashing the
        file again."""
        model_id = names.to_id(alias)
        check_id(model_id)
        path = str(self.allowed.check(path))
        mmproj = str(self.allowed.check(mmproj, "projector path")) if mmproj is not None else None
        try:
            meta = self.store.meta(model_id)
        except KeyError:
            meta = None
        files = (meta or {}).get("files") or {}
        same = (meta is not None and _same_file(meta.get("registeredPath"), path)
                and _same_file((files.get("mmproj") or {}).get("path"), mmproj)
                and self.store.get(model_id)["readyToUse"])
        if not (same and self.loaded(model_id) is not None):
            self.store.register_path(model_id, path, mmproj=mmproj)
        return model_id

    # ---- pulls -------------------------------------------------------------------------

    def plan(self, name: str) -> tuple[catalogue.Spec, pulls.Plan]:
        """What a pull fetches, found before any response starts (a 4xx here is plain)."""
        try:
            spec = catalogue.parse_spec(name)
        except catalogue.SpecError as exc:
            raise ApiError(exc.code, str(exc)) from None
        self.store.check_writable()
        check_id(spec.model_id)
        return spec, pulls.plan_hf(spec.model_id, spec.repo, quant=spec.quant, filename=spec.filename)

    def pull_work(self, spec: catalogue.Spec, plan: pulls.Plan, result: dict):
        """The pull as WorkerStream work, emitting Mullama's lines; `result` gets its view."""
        progress = catalogue.PullProgress(catalogue.alias(spec.model_id), plan.sizes)

        def work(emit, cancel) -> None:
            def translate(event: dict) -> None:
                line = progress.line(event)
                if line is not None:
                    emit(line)
            result["view"] = pulls.pull(self.store, plan, translate, cancel)
        return work

    def pull_result(self, spec: catalogue.Spec, view: dict) -> dict:
        return {"status": "success", "model": catalogue.alias(spec.model_id), "repo": spec.repo,
                "size_bytes": view.get("totalSize") or 0}

    # ---- the daemon --------------------------------------------------------------------

    def uptime(self) -> int:
        return int(time.monotonic() - self.started)

    def active_requests(self) -> int:
        return sum(_active(m) for m in self.manager.loaded())


def _active(item) -> int:
    """A loaded model's requests waiting for a slot or decoding (an embedder reports none)."""
    return item.engine.in_flight if item is not None else 0


def _same_file(recorded: str | None, given: str | None) -> bool:
    if recorded is None or given is None:
        return recorded is None and given is None
    return os.path.realpath(recorded) == os.path.realpath(given)


def _stream_error(exc: BaseException) -> dict:
    code = exc.code if isinstance(exc, StoreError) else 500
    message = str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"
    return {"status": "error", **mullama_error(code, message)}


class _Route:
    def __init__(self, daemon: Daemon):
        self.daemon = daemon


class Models(_Route):
    def on_get(self, req, resp):
        views = [v for v in self.daemon.store.list(ready=True) if v["kind"] in GGUF_KINDS]
        resp.media = {"models": [self.daemon.entry(v) for v in views]}


class Model(_Route):
    def on_get(self, req, resp, name):
        resp.media = self.daemon.detail(self.daemon.view(name))

    def on_delete(self, req, resp, name):
        model_id = self.daemon.store.get(names.to_id(name))["id"]
        self.daemon.store.check_writable()
        self.daemon.manager.unload(model_id)
        self.daemon.store.delete(model_id)
        resp.media = {"status": "deleted", "alias": catalogue.alias(model_id)}


class Unload(_Route):
    def on_post(self, req, resp, name):
        model_id = self.daemon.view(name)["id"]
        if not self.daemon.manager.unload(model_id):
            raise ApiError(409, f"Model '{catalogue.alias(model_id)}' is not loaded")
        resp.media = {"status": "unloaded", "alias": catalogue.alias(model_id)}


class Pull(_Route):
    def on_post(self, req, resp):
        body = read_model(req, MullamaPullBody, self.daemon.settings.max_body_size)
        spec, plan = self.daemon.plan(body.name)
        result: dict = {}
        work = self.daemon.pull_work(spec, plan, result)
        if not body.stream:
            run_to_end(work)
            resp.media = self.daemon.pull_result(spec, result["view"])
            return
        resp.content_type = NDJSON
        resp.stream = WorkerStream(work, jsonio.line, _stream_error,
                                   name=f"pull-{spec.model_id}")


class Load(_Route):
    def on_post(self, req, resp):
        body = read_model(req, MullamaLoadBody, self.daemon.settings.max_body_size)
        wanted = {k: v for k, v in ((CONTEXT, body.context_size), (GPU_LAYERS, body.gpu_layers))
                  if v is not None}
        if body.path is not None:
            model_id = self.daemon.register(body.alias, body.path, body.mmproj)
        elif body.mmproj is not None:
            raise ApiError(400, "'mmproj' goes with 'path': the projector of the GGUF file it names")
        else:
            model_id = self.daemon.view(body.alias)["id"]
        resp.media = self.daemon.load(model_id, wanted, body.set_default)


class SystemStatus(_Route):
    def on_get(self, req, resp):
        d = self.daemon
        loaded = d.manager.loaded()
        requests, tokens = d.metrics.totals()
        default = d.manager.default_model()
        resp.media = {
            "version": d.version, "uptime_secs": d.uptime(), "models_loaded": len(loaded),
            "http_endpoint": f"http://{d.settings.host}:{d.settings.port}", "ipc_endpoint": None,
            "default_model": catalogue.alias(default) if default else None,
            "stats": {"requests_total": requests, "tokens_generated": tokens,
                      "active_requests": d.active_requests(), "gpu_available": system.gpu_available(),
                      "memory_used_bytes": system.memory_used(
                          pid for m in loaded if (pid := m.engine.pid)),
                      "memory_total_bytes": system.memory_total()},
        }


class Status(_Route):
    def on_get(self, req, resp):
        d = self.daemon
        resp.media = {"status": "ok", "version": d.version, "uptime_secs": d.uptime(),
                      "models_loaded": len(d.manager.loaded()), "active_requests": d.active_requests()}


class Health(_Route):
    """200 once serving; 503 while the --preload models are still loading."""

    def on_get(self, req, resp):
        if self.daemon.manager.starting:
            resp.status = falcon.HTTP_503
            resp.media = {"status": "starting"}
            return
        resp.media = {"status": "ok"}


class Defaults:
    def on_get(self, req, resp):
        resp.media = [d.entry() for d in catalogue.DEFAULTS]


class UseDefault(_Route):
    """Pull a catalogue model (unless the store has it, up to date) and load it as the default."""

    def on_post(self, req, resp, name):
        if name not in catalogue.BY_NAME:
            raise ApiError(404, f"'{name}' is not in the defaults catalogue (GET /api/defaults lists it)")
        spec, plan = self.daemon.plan(name)
        result: dict = {}
        run_to_end(self.daemon.pull_work(spec, plan, result))
        resp.media = {**self.daemon.load(spec.model_id, {}, set_default=True, refuse_same=False),
                      "repo": spec.repo, "size_bytes": result["view"].get("totalSize") or 0}


def resources(dispatcher: Dispatcher, settings: Settings, metrics: Metrics) -> dict:
    """The daemon's resources by route (mullama/family.py declares the routes)."""
    daemon = Daemon(dispatcher, settings, metrics)
    return {
        "/api/models": Models(daemon), "/api/models/pull": Pull(daemon), "/api/models/load": Load(daemon),
        "/api/models/{name}": Model(daemon), "/api/models/{name}/unload": Unload(daemon),
        "/api/system/status": SystemStatus(daemon), "/status": Status(daemon), "/health": Health(daemon),
        "/api/defaults": Defaults(), "/api/defaults/{name}/use": UseDefault(daemon),
    }
