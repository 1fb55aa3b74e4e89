"""What the Silicon Studio routes do, apart from HTTP: background downloads, registrations,
the active model, the chats that /chat/stop stops, and the views the API shows.

The engine API is a desktop app's: one user, one active model, one generation at a time.
Modelyard serves many, so "active" is the model this API loaded last (others may be loaded
too), and a stop stops every chat this API is streaming (of one model when named).
"""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from modelyard.server.api.serving import with_serving
from modelyard.server.registry import allowed, formats, pulls, registered
from modelyard.server.registry import store as st
from modelyard.server.registry.errors import FetchError, InvalidFile, ModelNotFound
from modelyard.server.shared.facts import ADAPTER_KIND, id_problem

log = logging.getLogger(__name__)

SECTION = "silicon"  # the store record's section for what this API keeps (name, url)


# ---- views (pure) -----------------------------------------------------------------------


@dataclass
class Download:
    """A background download as the list shows it."""

    model_id: str
    name: str
    url: str
    downloaded: int = 0
    total: int | None = None
    error: str | None = None
    done: bool = False
    main: str = ""  # the model file's source, as progress events name it
    cancel: threading.Event = field(default_factory=threading.Event)

    def progress(self) -> dict:
        percent = round(100.0 * self.downloaded / self.total, 1) if self.total else None
        return {"downloaded": self.downloaded, "total": self.total, "percent": percent}


def model_entry(view: dict, record: dict, path: str | None, loaded: bool,
                download: Download | None = None) -> dict:
    """A store model (its registry view and record) as GET /api/engine/models shows it."""
    extra = record.get(SECTION) or {}
    ready = view["readyToUse"]
    if download is not None and not download.done:
        status = "failed" if download.error else "downloading"
    else:
        status = "ready" if ready else "not_ready"
    return {
        "id": view["id"], "name": extra.get("name") or view["id"], "path": path,
        "size": view.get("totalSize"), "kind": view["kind"], "status": status, "downloaded": ready,
        "is_vision": view["kind"] == "vlm", "is_custom": bool(view.get("registeredPath")),
        "is_finetuned": bool(record.get("is_finetuned")), "is_loaded": loaded, "url": extra.get("url"),
        "progress": download.progress() if download is not None and not download.done else None,
        "error": (download.error if download is not None and download.error else view.get("notReadyReason")),
    }


def failed_entry(download: Download) -> dict:
    """A download that failed before (or after) its model was in the store: still listed,
    with why, until it is deleted or downloaded again."""
    return {"id": download.model_id, "name": download.name, "path": None, "size": None, "kind": None,
            "status": "failed" if download.error else "downloading", "downloaded": False,
            "is_vision": False, "is_custom": False, "is_finetuned": False, "is_loaded": False,
            "url": download.url, "progress": download.progress(), "error": download.error}


def id_from_repo(text: str) -> tuple[str, str, str | None]:
    """(model id, repo, file or None) of `org/repo` or `org/repo/path/file.gguf`."""
    parts = [p for p in text.strip().split("/") if p]
    if len(parts) < 2:
        raise InvalidFile(f"'{text}' is not a Hugging Face repo: use org/repo or org/repo/file.gguf")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:]) or None
    if filename is not None and not filename.lower().endswith(".gguf"):
        raise InvalidFile(f"'{filename}' is not a GGUF file; Modelyard serves GGUF models (MLX ones are not served)")
    # org--repo (org--file with a file named), as Ollama's names become ids
    base = registered.id_for(Path(filename) if filename else Path(parts[1]))
    model_id = f"{registered.id_for(Path(parts[0]))}--{base}"
    return (base if id_problem(model_id) else model_id), repo, filename


def format_fields(meta: dict, token_text) -> dict:
    """GET models/{id}/format: the tokenizer's metadata from the GGUF. `token_text(id)` is the
    vocabulary's text of a token id (None when the file has no vocabulary)."""
    def token(key: str) -> tuple[str | None, int | None]:
        tid = meta.get(f"tokenizer.ggml.{key}_token_id")
        return (token_text(tid) if tid is not None and token_text else None), tid

    bos, bos_id = token("bos")
    eos, eos_id = token("eos")
    pad, pad_id = token("padding")
    unk, unk_id = token("unknown")
    template = meta.get("tokenizer.chat_template")
    arch = meta.get("general.architecture")
    return {
        "model_type": arch, "has_chat_template": bool(template), "chat_template": template,
        "bos_token": bos, "eos_token": eos, "pad_token": pad, "unk_token": unk,
        "bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id, "unk_token_id": unk_id,
        "add_bos_token": meta.get("tokenizer.ggml.add_bos_token"),
        "add_eos_token": meta.get("tokenizer.ggml.add_eos_token"),
        "tokenizer_model": meta.get("tokenizer.ggml.model"), "tokenizer_pre": meta.get("tokenizer.ggml.pre"),
        "vocab_size": meta.get("tokenizer.ggml.tokens.count"),
        "context_length": meta.get(f"{arch}.context_length") if arch else None,
        "name": meta.get("general.name"),
    }


# ---- the service ------------------------------------------------------------------------


class Engine:
    """State this API keeps in the server process (one gunicorn worker)."""

    def __init__(self, store: st.Store, dispatcher, allowed_folders: allowed.AllowedFolders):
        self.store = store
        self.dispatcher = dispatcher
        self.allowed = allowed_folders
        self.manager = dispatcher.manager
        self.active_id: str | None = None
        self._downloads: dict[str, Download] = {}
        self._chats: set[Chat] = set()
        self._lock = threading.Lock()

    # ---- models ------------------------------------------------------------------------

    def entry(self, model_id: str) -> dict:
        view = self.store.get(model_id)
        record = self.store.meta(model_id)
        loaded = {m.id for m in self.manager.loaded()}
        return with_serving(model_entry(view, record, self._path(view), model_id in loaded,
                                        self._downloads.get(model_id)), self.manager, model_id)

    def models(self) -> list[dict]:
        loaded = {m.id for m in self.manager.loaded()}
        out, seen = [], set()
        for view in self.store.list():
            if view["kind"] == "onnx":
                continue  # not a GGUF: this API's engine cannot chat with it
            seen.add(view["id"])
            try:
                record = self.store.meta(view["id"])
            except ModelNotFound:
                continue  # deleted meanwhile
            out.append(with_serving(model_entry(view, record, self._path(view), view["id"] in loaded,
                                                self._downloads.get(view["id"])), self.manager, view["id"]))
        out += [failed_entry(d) for d in list(self._downloads.values()) if d.model_id not in seen and not d.done]
        return out

    def _path(self, view: dict) -> str | None:
        if view.get("registeredPath"):
            return str(self.store.file_path(view["id"]))
        return str(self.store.file_path(view["id"])) if view["readyToUse"] else None

    def register(self, name: str, path: str, url: str | None) -> dict:
        model_id = registered.id_for(Path(name))
        real = self.allowed.check(path)
        self.store.register_path(model_id, real, fields={SECTION: {"name": name, "url": url}})
        return self.entry(model_id)

    def scan(self, root: str) -> tuple[list[dict], list[dict]]:
        result = registered.scan(self.allowed.check(root), exclude=self.store.models_dir, allowed=self.allowed)
        done, skipped = [], list(result.skipped)
        holders = self._registered_paths()
        for found in result.found:
            model_id = registered.id_for(found.model)
            holder = holders.get(str(found.model))
            if holder is not None and not re.fullmatch(re.escape(model_id) + r"(-\d+)?", holder):
                # Registered under another id already (by a register, or as 'Alpha' where
                # this scan names it 'alpha'): one file is one model.
                skipped.append({"path": str(found.model), "reason": f"already registered as '{holder}'"})
                continue
            try:
                model_id = self._free_id(model_id, found.model)
                if not self._unchanged(model_id, found):
                    self.store.register_path(model_id, found.model, mmproj=found.mmproj,
                                             fields={SECTION: {"name": found.model.stem, "url": None}})
                done.append(self.entry(model_id))
            except st.StoreError as exc:
                skipped.append({"path": str(found.model), "reason": str(exc)})
        return done, skipped

    def _registered_paths(self) -> dict[str, str]:
        """{file path: model id} of the models registered where they lie."""
        out = {}
        for view in self.store.list():
            try:
                path = self.store.meta(view["id"]).get("files", {}).get("model", {}).get("path")
            except ModelNotFound:
                continue
            if path:
                out.setdefault(path, view["id"])
        return out

    def _unchanged(self, model_id: str, found: registered.Found) -> bool:
        """Registered already from these very files, as they were verified: a scan again of
        a library of large models need not hash them all again."""
        try:
            view, files = self.store.get(model_id), self.store.meta(model_id)["files"]
        except ModelNotFound:
            return False
        wanted = {"model": found.model, "mmproj": found.mmproj}
        return view["readyToUse"] and {r: f.get("path") for r, f in files.items()} == \
            {r: str(p) for r, p in wanted.items() if p is not None}

    def _free_id(self, base: str, path) -> str:
        """`base`, or `base-2`... when another file holds it: a scan never replaces a model
        with another file of the same name (the same file registers again in place)."""
        for n in range(1, 1000):
            candidate = base if n == 1 else f"{base}-{n}"
            try:
                record = self.store.meta(candidate)
            except ModelNotFound:
                return candidate
            if record.get("files", {}).get("model", {}).get("path") == str(path):
                return candidate
        raise InvalidFile(f"Too many models are named {base}")

    def delete(self, model_id: str) -> None:
        download = self._downloads.pop(model_id, None)
        if download is not None:
            download.cancel.set()
        self.manager.unload(model_id)
        if self.active_id == model_id:
            self.active_id = None
        try:
            self.store.delete(model_id)
        except ModelNotFound:
            if download is None:
                raise

    # ---- downloads ---------------------------------------------------------------------

    def download(self, text: str) -> Download:
        """Start a background download of a Hugging Face repo's GGUF; its progress and end
        show in models(). A second request for a model downloading is refused (409)."""
        model_id, repo, filename = id_from_repo(text)
        with self._lock:
            current = self._downloads.get(model_id)
            if current is not None and not current.done and not current.error:
                raise st.TransferBusy(f"Model '{model_id}' is already downloading")
            download = Download(model_id, text.strip(), f"https://huggingface.co/{repo}")
            self._downloads[model_id] = download
        threading.Thread(target=self._download, args=(download, repo, filename),
                         name=f"silicon-download-{model_id}", daemon=True).start()
        return download

    def _download(self, download: Download, repo: str, filename: str | None) -> None:
        def emit(event: dict) -> None:
            if event.get("status") == "downloading" and event.get("digest") == download.main:
                download.downloaded = event.get("completed") or 0
                download.total = event.get("total")

        try:
            plan = pulls.plan_hf(download.model_id, repo, filename=filename)
            download.main = plan.sources["model"].identity
            download.total = plan.sizes.get("model")
            pulls.pull(self.store, plan, emit, download.cancel)
            self.store.update(download.model_id, {SECTION: {"name": download.name, "url": download.url}})
            download.done = True
        except Exception as exc:  # shown in the list: the app polls it
            if download.cancel.is_set():
                return
            download.error = str(exc) if isinstance(exc, (st.StoreError, FetchError)) else \
                f"Download failed: {type(exc).__name__}: {exc}"
            log.warning("download of %s failed: %s", download.model_id, download.error)

    # ---- loading -----------------------------------------------------------------------

    def base_of(self, model_id: str) -> str:
        """The model that is loaded for `model_id`: an adapter's base (chat and predict put the
        adapter on per request), else the model itself."""
        record = self.store.meta(model_id)
        return record["adapter"]["base"] if record["kind"] == ADAPTER_KIND else model_id

    def load(self, model_id: str, kv_cache_type: str):
        loaded = self.manager.load_with_kv_cache_type(self.base_of(model_id), kv_cache_type,
                                                     by="a Silicon Studio load (POST /api/engine/models/load)")
        self.active_id = model_id
        return loaded

    def unload(self, model_id: str | None) -> bool:
        model_id = model_id or self.active_id
        if model_id is None:
            return False
        if self.active_id == model_id:
            self.active_id = None
        return self.manager.unload(self.base_of(model_id))

    def active(self) -> dict | None:
        model_id = self.active_id
        try:
            base = self.base_of(model_id) if model_id else None
        except st.ModelNotFound:
            return None
        item = next((m for m in self.manager.loaded() if m.id == base), None)
        if item is None:
            return None
        view = self.store.get(model_id)
        return {"id": model_id, "name": (self.store.meta(model_id).get(SECTION) or {}).get("name") or model_id,
                "size": view.get("totalSize"), "path": self._path(view),
                "architecture": self.architecture(model_id),
                "context_window": item.engine.context_size,
                "is_vision": item.kind == "vlm"}

    def format(self, model_id: str) -> dict:
        """The tokenizer's metadata of a model's GGUF (format_fields)."""
        from modelyard.server.inference.llama.model import LlamaModel, ModelLoadError

        view = self.store.get(model_id)
        if view["kind"] == "onnx":
            raise InvalidFile(f"Model '{model_id}' is an ONNX model: it has no GGUF tokenizer metadata")
        with self.store.open_file(model_id):  # not ready: InvalidFile, with why
            pass
        path = self.store.file_path(model_id)
        meta = formats.gguf_metadata(path)
        item = next((m for m in self.manager.loaded() if m.id == model_id and m.model is not None), None)
        if item is not None:
            return format_fields(meta, item.model.token_text)
        try:
            vocab = LlamaModel(path, vocab_only=True)  # the vocabulary only: fast, no weights
        except ModelLoadError:
            return format_fields(meta, None)
        try:
            return format_fields(meta, vocab.token_text)
        finally:
            vocab.close()

    def architecture(self, model_id: str) -> str | None:
        try:
            return formats.gguf_metadata(self.store.file_path(model_id)).get("general.architecture")
        except (formats.FormatError, OSError):
            return None

    # ---- chats -------------------------------------------------------------------------

    def track(self, model_id: str, group) -> "Chat":
        chat = Chat(model_id, group)
        with self._lock:
            self._chats.add(chat)
        return chat

    def untrack(self, chat: "Chat") -> None:
        with self._lock:
            self._chats.discard(chat)

    def stop(self, model_id: str | None) -> int:
        """Stop the chats this API is streaming (of `model_id` when given). Returns how many."""
        with self._lock:
            chats = [c for c in self._chats if model_id is None or c.model_id == model_id]
        for chat in chats:
            chat.stop()
        return len(chats)


class Chat:
    """A chat being streamed, which /chat/stop may stop."""

    def __init__(self, model_id: str, group):
        self.model_id = model_id
        self.group = group
        self.stopped = False

    def stop(self) -> None:
        # The scheduler frees the slot within one decode step and ends the generation
        # ("cancelled"); the stream then closes with the text it had.
        self.stopped = True
        self.group.close()
