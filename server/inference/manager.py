"""Which models are in memory: load on first use or on request, unload on request.

Each model is loaded once per process (one gunicorn worker), whatever the number of
threads. A model whose file or settings changed in the registry since it was loaded is
reloaded on its next use.
"""
from __future__ import annotations

import ctypes
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from modelyard.server.inference import context_limits
from modelyard.server.inference.engine import Engine
from modelyard.server.inference.errors import InferenceError, LoadFailed, ModelNotFound, ModelNotReady
from modelyard.server.inference.metrics import InferenceMetrics
from modelyard.server.shared.facts import DEFAULT_KV_CACHE_TYPE, KV_CACHE_KINDS

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    id: str
    kind: str
    meta: dict
    engine: Engine  # RemoteScheduler | RemoteEmbedder (runner processes) | OnnxModel
    model: object = None  # the LlamaModel for GGUF kinds
    file_key: tuple = ()
    loaded_at: float = field(default_factory=time.time)
    projector: object = None  # a vlm's multimodal projector


@dataclass(frozen=True)
class Serving:
    """How a loaded model runs, for every API alike: one instance per model, so a setting
    one API's load request changes (Silicon Studio's KV cache type, Mullama's context and
    GPU layers) applies to the requests of every other API until the model loads again.
    Every API's model listing shows it; `set_by` names the load request that chose
    settings other than the registry's (None: the registry's and the server's flags)."""

    context_size: int | None
    gpu_layers: int
    kv_cache_type: str | None
    set_by: str | None = None

    def as_dict(self) -> dict:
        return {"context_size": self.context_size, "gpu_layers": self.gpu_layers,
                "kv_cache_type": self.kv_cache_type, "set_by": self.set_by}

    def why(self) -> str:
        """For an error that these settings caused: where they came from."""
        if self.set_by is None:
            return ""
        return (f" The model is loaded with the settings of {self.set_by} (context {self.context_size}, "
                f"KV cache {self.kv_cache_type or 'f16'}); they apply to every API until it is loaded again.")


def _file_key(paths: list[Path], meta: dict) -> tuple:
    """What changes when a model's files or serving fields change in the registry.

    A vlm's paths include its projector, so a new projector alone reloads the model too."""
    key = (repr(meta.get("gguf")), repr(meta.get("onnx")))
    for path in paths:
        st = path.stat()
        key += (st.st_ino, st.st_mtime_ns, st.st_size)
    return key


def _check_context(spec: dict, vocab) -> None:
    """Refuse, before any runner starts, a context the model was not trained for or whose KV
    cache the machine (or the pod's memory limit) cannot hold."""
    from modelyard.server.inference.llama.scheduler import DEFAULT_CONTEXT, PRIORITY_SLOTS

    trained = context_limits.trained_context(vocab.meta)
    context_limits.check_context(spec["context"], trained)
    if spec["kind"] == "embed":  # the embedder's context is its batch, bounded by training
        return
    per_slot = spec["context"] or min(trained or DEFAULT_CONTEXT, DEFAULT_CONTEXT)
    shape = context_limits.kv_shape(vocab.meta)
    context_limits.check_kv_memory(shape, spec["kv_cache_type"] or DEFAULT_KV_CACHE_TYPE, per_slot,
                                   max(1, spec["parallel"]) + PRIORITY_SLOTS, context_limits.available_memory())


def _trim_heap() -> None:
    """Give the heap's free pages back to the operating system (glibc keeps them otherwise):
    a vocabulary of 150k tokens is tens of MB of small allocations."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class ModelManager:
    def __init__(self, store, settings, metrics: InferenceMetrics | None = None):
        self.store = store
        self.settings = settings
        self.metrics = metrics or InferenceMetrics()
        self._loaded: dict[str, Loaded] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._preload_done = threading.Event()
        self._preload_errors: dict[str, str] = {}
        # Cache types asked for at load time (Silicon Studio's kv_quantization), by model:
        # they outrank the registry's and --kv-cache-type, and stay until the next such load.
        self._kv_cache_types: dict[str, str] = {}
        # Serving fields a load asked for (Mullama's context_size and gpu_layers), by model,
        # laid over the registry's gguf fields the same way; a later such load adds to them.
        self._serving: dict[str, dict] = {}
        self._set_by: dict[str, str] = {}  # model -> the load request whose settings it runs with
        # The model that requests naming none use (Mullama's set_default); None: the first loaded.
        self._default: str | None = None

    # ---- lookups ---------------------------------------------------------------------

    def get(self, model_id: str) -> Loaded:
        """The loaded model, loading it first when needed."""
        item = self._loaded.get(model_id)
        if item is not None and item.engine.alive and self._fresh(item):
            return item
        return self.load(model_id)

    def _meta(self, model_id: str) -> dict:
        """The registry's metadata, with the serve-time overrides of a preloaded model and
        the cache type the last load_with_kv_cache_type asked for."""
        meta = self.store.get(model_id)
        overrides = self.settings.overrides_for(model_id)
        kv = self._kv_cache_types.get(model_id)
        if kv is not None:
            overrides = {**overrides, "gguf": {**overrides.get("gguf", {}), "kvCacheType": kv}}
        serving = self._serving.get(model_id)
        if serving:
            overrides = {**overrides, "gguf": {**overrides.get("gguf", {}), **serving}}
        if not overrides:
            return meta
        return {**meta, **{k: {**(meta.get(k) or {}), **v} for k, v in overrides.items()}}

    def _fresh(self, item: Loaded) -> bool:
        try:
            meta = self._meta(item.id)
            return _file_key(self._paths(item.id, meta), meta) == item.file_key
        except Exception:  # deleted or changed underneath: let load() say what is wrong
            return False

    def _paths(self, model_id: str, meta: dict) -> list[Path]:
        paths = [self.store.file_path(model_id)]
        if meta["kind"] == "vlm":
            paths.append(self.store.file_path(model_id, "mmproj"))
        return paths

    def loaded(self) -> list[Loaded]:
        return sorted(self._loaded.values(), key=lambda x: x.loaded_at)

    def _lock(self, model_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(model_id, threading.Lock())

    # ---- load and unload -------------------------------------------------------------

    def load(self, model_id: str) -> Loaded:
        with self._lock(model_id):
            try:
                meta = self._meta(model_id)
            except KeyError:
                raise ModelNotFound(model_id) from None
            if not meta.get("readyToUse"):
                # A file registered by path that changed on disk: the engine that has the old
                # one open must not serve from a file that is being rewritten.
                self._unload_locked(model_id)
                raise ModelNotReady(f"Model '{model_id}' is not ready: " + (
                    meta.get("notReadyReason") or "its file has not been uploaded or downloaded yet"))
            path = self.store.file_path(model_id)
            key = _file_key(self._paths(model_id, meta), meta)
            current = self._loaded.get(model_id)
            if current is not None:
                if current.file_key == key and current.engine.alive:
                    return current
                log.info("model %s changed in the registry; reloading", model_id)
                self._unload_locked(model_id)
            started = time.monotonic()
            try:
                item = self._build(model_id, meta, path)
            except InferenceError:  # not ready, a context too large, a failed load: said already
                raise
            except Exception as exc:
                log.exception("loading model %s failed", model_id)
                raise LoadFailed(f"Model '{model_id}' could not be loaded: {exc}") from None
            item.file_key = key
            self._loaded[model_id] = item
            self._gauge()
            log.info("loaded model %s (%s) in %.1fs", model_id, meta["kind"], time.monotonic() - started)
            return item

    def _build(self, model_id: str, meta: dict, path: Path) -> Loaded:
        kind = meta["kind"]
        s = self.settings
        if kind == "onnx":
            from modelyard.server.inference.onnx_runtime import OnnxModel

            provider = (meta.get("onnx") or {}).get("executionProvider")
            engine = OnnxModel(path, provider, threads=s.threads, name=model_id)
            return Loaded(model_id, kind, meta, engine)
        from modelyard.server.inference.llama import remote
        from modelyard.server.inference.llama.model import LlamaModel, ModelLoadError

        gguf = meta.get("gguf") or {}
        spec = {
            "kind": kind, "name": model_id, "path": str(path),
            "gpu_layers": int(gguf.get("initGpuLayerSize") or 0), "threads": s.threads,
            "parallel": s.parallel, "context": gguf.get("initContextSize"),
            # An embed model's cache lives for one batch (an encoder has none): f16 always.
            "kv_cache_type": gguf.get("kvCacheType") if kind in KV_CACHE_KINDS else None,
            "mmproj": str(self.store.file_path(model_id, "mmproj")) if kind == "vlm" else None,
        }
        # The engine runs in a runner process; this process keeps only the vocabulary.
        try:
            vocab = LlamaModel(path, vocab_only=True)
        except ModelLoadError as exc:
            raise LoadFailed(f"Model '{model_id}' could not be loaded: {exc}") from None
        try:
            _check_context(spec, vocab)
        except InferenceError:
            vocab.close()
            raise
        vocab.max_piece_bytes  # every request's length check needs it: read now, before ready
        try:
            engine, projector = remote.start(spec, model_id, vocab, self.metrics, s.engine_hang_timeout)
        except ModelLoadError as exc:
            vocab.close()
            raise LoadFailed(f"Model '{model_id}' could not be loaded: {exc}") from None
        except Exception:
            vocab.close()
            raise
        per_token = getattr(engine, "kv_bytes_per_token", None)
        if per_token is not None:
            self.metrics.set_kv_cache(model_id, engine.kv_cache_type, per_token)
        return Loaded(model_id, kind, meta, engine, vocab, projector=projector)

    def load_with_kv_cache_type(self, model_id: str, kv_cache_type: str | None, by: str) -> Loaded:
        """Load with this KV cache type (facts.KV_CACHE_TYPES; None: the registry's), for
        APIs whose load request names one (Silicon Studio's kv_quantization, mapped by
        facts.kv_cache_type_for_bits). A loaded model whose type differs is reloaded; later
        requests of every API use the model as loaded, until the next such call."""
        if kv_cache_type is None:
            self._kv_cache_types.pop(model_id, None)
        else:
            self._kv_cache_types[model_id] = kv_cache_type
        self._note_setter(model_id, by)
        return self.load(model_id)

    def load_with_serving(self, model_id: str, gguf: dict, by: str) -> Loaded:
        """Load with these gguf serving fields (initContextSize, initGpuLayerSize) over the
        registry's and over those an earlier such load named; a loaded model whose fields
        differ is reloaded. Later requests of every API use the model as loaded."""
        if gguf:
            self._serving[model_id] = {**self._serving.get(model_id, {}), **gguf}
        self._note_setter(model_id, by)
        return self.load(model_id)

    def _note_setter(self, model_id: str, by: str) -> None:
        if self._serving.get(model_id) or model_id in self._kv_cache_types:
            self._set_by[model_id] = by
        else:
            self._set_by.pop(model_id, None)

    def serving(self, model_id: str) -> Serving | None:
        """How `model_id` runs now, if it is loaded (and not an ONNX model)."""
        item = self._loaded.get(model_id)
        if item is None or item.kind == "onnx":
            return None
        gguf = item.meta.get("gguf") or {}
        return Serving(item.engine.context_size, int(gguf.get("initGpuLayerSize") or 0),
                       item.engine.kv_cache_type, self._set_by.get(model_id))

    def serving_fields(self, model_id: str) -> dict:
        """The gguf fields a load of `model_id` uses now: the registry's with the overrides."""
        return dict(self._meta(model_id).get("gguf") or {})

    def set_default(self, model_id: str | None) -> None:
        self._default = model_id

    def default_model(self) -> str | None:
        """The model for a request that names none: the one set as default while it is in the
        store, else the first model loaded that is still loaded."""
        if self._default is not None and self.store_has(self._default):
            return self._default
        first = self.loaded()
        return first[0].id if first else None

    def store_has(self, model_id: str) -> bool:
        try:
            self.store.get(model_id)
        except KeyError:
            return False
        return True

    def unload(self, model_id: str) -> bool:
        """Free a model's memory. False when it was not loaded."""
        with self._lock(model_id):
            return self._unload_locked(model_id)

    def _unload_locked(self, model_id: str) -> bool:
        item = self._loaded.pop(model_id, None)
        if item is None:
            return False
        item.engine.close()  # fails in-flight requests, joins the engine thread
        if item.projector is not None:
            item.projector.close()
        if item.model is not None:
            item.model.close()
        _trim_heap()
        self.metrics.forget_model(model_id)
        self._gauge()
        log.info("unloaded model %s", model_id)
        return True

    def close(self) -> None:
        for model_id in list(self._loaded):
            self.unload(model_id)

    def _gauge(self) -> None:
        self.metrics.set_loaded(len(self._loaded))

    # ---- preloading (--preload) ------------------------------------------------------

    def start_preload(self, ids: list[str]) -> None:
        """Load `ids` in a background thread, so /healthz answers while they load."""
        if not ids:
            self._preload_done.set()
            return

        def work():
            for model_id in ids:
                try:
                    self.load(model_id)
                except Exception as exc:
                    msg = str(exc)
                    self._preload_errors[model_id] = msg
                    log.error("preload of %s failed: %s", model_id, msg)
            self._preload_done.set()

        threading.Thread(target=work, name="preload", daemon=True).start()

    @property
    def starting(self) -> bool:
        """True while the --preload models are being loaded."""
        return not self._preload_done.is_set()

    def is_ready(self) -> bool:
        """Ready when every --preload model is loaded (and still is)."""
        return self._preload_done.is_set() and all(m in self._loaded for m in self.settings.preload)

    def preload_errors(self) -> dict[str, str]:
        return dict(self._preload_errors)


