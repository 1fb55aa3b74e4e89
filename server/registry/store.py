"""The model store on disk: metadata, files, readiness, and crash-safe transfers.

Layout, one folder per model (this is also the cache volume's format in a cluster):

    <root>/models/<id>/model.json      metadata, written atomically
    <root>/models/<id>/model.gguf      main file (model.onnx for onnx)
    <root>/models/<id>/mmproj.gguf     a vlm's projector
    <root>/models/<id>/*.partial       a file being written; never read as a model
    <root>/models/<id>/.lock           flock held while a transfer runs (any process)

A model is ready only when its metadata says every file its kind needs was committed,
and each of those files is on disk with the size that was verified (readiness.py). Files
are written to `.partial`, checked, fsynced and renamed, so `kill -9` at any moment leaves
either the old complete file or the new one, never a torn one under the final name. One
metadata write decides a commit, which then only rolls forward (commits.py says how, and
what start-up finishes or clears of the work a crash cut short).

A model registered by path (`register_path`, see registered.py) has no file in its folder:
its records name the user's files, which the store never writes, renames or deletes. It is
decided by one metadata write too (a crash before it leaves the folder without model.json,
which start-up removes, or the previous registration). It is ready only while each file
stats as it did when it was verified (inode, mtime, size); otherwise the view says why not.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

from modelyard.server.registry import commits, registered
from modelyard.server.registry.commits import META, PROVISIONAL
from modelyard.server.registry.diskio import PARTIAL, atomic_write, flock, fsync_dir, tmp_files  # noqa: F401  (st.PARTIAL)
from modelyard.server.registry.readiness import external_key, files_for, not_ready_reason, public_view
from modelyard.server.shared.facts import ADAPTER_KIND, id_problem
from modelyard.server.registry.transfer import Transfer  # noqa: F401  (re-exported: st.Transfer)
from modelyard.server.registry.errors import (  # noqa: F401  (re-exported: callers use store.ModelNotFound)
    Cancelled,
    IdTaken,
    InvalidFile,
    InvalidId,
    ModelInUse,
    ModelNotFound,
    ReadOnlyStore,
    StoreError,
    TransferBusy,
)

class _Entry(NamedTuple):
    key: tuple
    meta: dict
    view: dict
    json: bytes


def check_id(model_id: str) -> None:
    problem = id_problem(model_id)
    if problem:
        raise InvalidId(f"Invalid model id {model_id!r}: it {problem}")


def _folder_lock(folder: Path, model_id: str):
    """The model folder's lock, held from now until the caller exits it; TransferBusy when an
    upload, a download or a registration (in any process) holds it."""
    lock = flock(folder, blocking=False)
    try:
        lock.__enter__()
    except BlockingIOError:
        raise TransferBusy(f"Model '{model_id}' already has an upload or download in progress") from None
    return lock


class Store:
    """The registry's on-disk state. Safe for many threads and for several processes."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.models_dir = self.root / "models"
        self._models = str(self.models_dir)
        try:
            self.models_dir.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # a read-only mount of an existing store: serve it as it is
        self.read_only = not os.access(self.models_dir, os.W_OK)
        self._id_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        # Cancel flags of the transfers this process runs, so DELETE can stop them.
        self._cancels: dict[str, threading.Event] = {}
        # Parsed metadata keyed by the file's identity, so listing 1,000 models stats
        # files instead of parsing them.
        self._cache: dict[str, _Entry] = {}

    # ---- paths -------------------------------------------------------------------------

    def model_dir(self, model_id: str) -> Path:
        check_id(model_id)
        return self.models_dir / model_id

    def file_path(self, model_id: str, role: str = "model") -> Path:
        meta = self._read_meta(model_id)
        name = files_for(meta["kind"])[role]
        record = meta.get("files", {}).get(role)
        if record and record.get("path"):  # registered by path: the user's file
            return Path(record["path"])
        return self.model_dir(model_id) / name

    def open_file(self, model_id: str, role: str = "model"):
        """A ready model's file, open for reading. A registered file is checked after it is
        opened (fstat against its record), so what is read is the file that was verified,
        not one that replaced it between a readiness check and the open. Raises InvalidFile
        when the model is not ready."""
        entry = self._entry(model_id)
        if not entry.view["readyToUse"]:
            reason = entry.view.get("notReadyReason") or "readyToUse is false"
            raise InvalidFile(f"Model '{model_id}' has no complete file: {reason}")
        f = open(self.file_path(model_id, role), "rb")
        record = entry.meta.get("files", {}).get(role) or {}
        if record.get("path"):
            st = os.fstat(f.fileno())
            problem = registered.change_problem(role, record, (st.st_ino, st.st_mtime_ns, st.st_size))
            if problem:
                f.close()
                raise InvalidFile(problem)
        return f

    # ---- reads -------------------------------------------------------------------------

    def get(self, model_id: str) -> dict:
        return self._entry(model_id).view

    def list(self, kind: str | None = None, ready: bool | None = None) -> list[dict]:
        return [entry.view for entry in self._entries(kind, ready)]

    def list_json(self, kind: str | None = None, ready: bool | None = None) -> bytes:
        """The registry's list response, `{"data": [...]}`, from per-model cached JSON."""
        return b'{"data": [' + b", ".join(e.json for e in self._entries(kind, ready)) + b"]}"

    def _entries(self, kind: str | None, ready: bool | None) -> Iterator["_Entry"]:
        try:
            # Names on disk were ids when the store made them; odd ones are skipped.
            names = sorted(n for n in os.listdir(self._models) if n[0] not in ".-")
        except FileNotFoundError:
            return
        for name in names:
            try:
                entry = self._entry(name, checked=True)
            except (ModelNotFound, InvalidId):
                continue
            if kind is not None and entry.meta["kind"] != kind:
                continue
            if ready is not None and entry.view["readyToUse"] != ready:
                continue
            yield entry

    def _entry(self, model_id: str, checked: bool = False) -> "_Entry":
        """A model's metadata, public view and view JSON, cached on its model.json.

        Every change the store makes rewrites model.json through a new file and a rename,
        so the file's inode differs from one version to the next, whatever the clock's
        granularity; data files are only renamed between two such writes. One stat per
        model therefore tells whether the cached view still holds, which keeps a list of
        1,000 models fast. (String paths: pathlib's overhead was most of such a list.)
        """
        if not checked:
            check_id(model_id)
        path = self._models + "/" + model_id + "/" + META
        try:
            st = os.stat(path)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            cached = self._cache.get(model_id)
            # A registered model's files change without model.json changing: their stats
            # are part of the key (none for a model whose files are in the store).
            if cached and cached.key[:3] == key and cached.key == key + external_key(cached.meta):
                return cached
            with open(path, "rb") as f:
                meta = json.loads(f.read())
        except FileNotFoundError:
            raise ModelNotFound(model_id) from None
        key += external_key(meta)
        reason = not_ready_reason(self._models, model_id, meta)
        view = public_view(meta, reason is None, reason)
        entry = _Entry(key, meta, view, json.dumps(view).encode())
        self._cache[model_id] = entry
        return entry

    def _read_meta(self, model_id: str) -> dict:
        return self._entry(model_id).meta

    def meta(self, model_id: str) -> dict:
        """A copy of a model's whole record: its files' records (`files`: name, size,
        sha256, source) and what other APIs keep beside (`ollama`: template, system...)."""
        meta = json.loads(json.dumps(self._read_meta(model_id)))
        meta.setdefault("files", {})
        return meta

    def committed_source(self, model_id: str, role: str = "model") -> str | None:
        """The source a committed file was fetched from (None for uploads)."""
        record = self._read_meta(model_id).get("files", {}).get(role) or {}
        return record.get("source")

    # ---- metadata writes -------------------------------------------------------------

    def create(self, fields: dict) -> tuple[dict, bool]:
        """Create a model's metadata, or update it when the id exists. Returns (model, created)."""
        self.check_writable()
        model_id = fields["id"]
        folder = self.model_dir(model_id)
        with self._id_locks[model_id]:
            if twin := self._case_twin(model_id):
                raise IdTaken(f"Model '{twin}' exists, and ids that differ only by case would share one folder "
                              f"on a case-insensitive file system: use '{twin}' or another id")
            try:
                meta = dict(self._read_meta(model_id))
                created = False
            except ModelNotFound:
                folder.mkdir(parents=True, exist_ok=True)
                meta = {"id": model_id, "createdAt": int(time.time() * 1000), "files": {}}
                created = True
            meta.update({k: v for k, v in fields.items() if k != "id"})
            self._write_meta(model_id, meta)
        return self.get(model_id), created

    def _case_twin(self, model_id: str) -> str | None:
        """Another model's id that differs from `model_id` only by case."""
        lower = model_id.lower()
        try:
            names = os.listdir(self._models)
        except FileNotFoundError:
            return None
        return next((n for n in names if n.lower() == lower and n != model_id and n[0] not in ".-"), None)

    @contextmanager
    def provisional(self, fields: dict, new: dict | None = None) -> Iterator[dict | None]:
        """A model's record for work that is about to fill it (a pull, a create): `fields`
        are set, `new` too when the model does not exist yet. Yields the view it had before
        (None when new). When the block fails, a model it created is removed again, so a
        failed or cancelled pull or create leaves nothing behind; one that a crash cut short
        is still marked PROVISIONAL, and recover() removes it."""
        try:
            before = self.get(fields["id"])
        except ModelNotFound:
            before = None
        self.create({**(new or {}), **fields, PROVISIONAL: True} if before is None else fields)
        try:
            yield before
        except BaseException:
            if before is None:
                try:
                    self.delete(fields["id"])
                except StoreError:
                    pass
            raise
        if before is None:  # done: the record is the model's now
            with self._id_locks[fields["id"]]:
                try:
                    meta = dict(self._read_meta(fields["id"]))
                except ModelNotFound:
                    return
                meta.pop(PROVISIONAL, None)
                self._write_meta(fields["id"], meta)

    def update(self, model_id: str, changes: dict) -> dict:
        """Change metadata fields (gguf, onnx, version) of an existing model."""
        self.check_writable()
        with self._id_locks[model_id]:
            meta = dict(self._read_meta(model_id))
            meta.update(changes)
            self._write_meta(model_id, meta)
        return self.get(model_id)

    def _write_meta(self, model_id: str, meta: dict, crash_step: str | None = None) -> None:
        files = meta.get("files", {})
        meta["totalSize"] = sum(r["size"] for r in files.values()) if files else None
        atomic_write(self.model_dir(model_id) / META, json.dumps(meta, indent=1).encode(),
                     crash_step)

    def _begin_commit(self, model_id: str, records: dict[str, dict]) -> None:
        """The write that decides a commit: old records out, the new ones pending."""
        with self._id_locks[model_id]:
            meta = commits.begun(self._read_meta(model_id), records)
            self._write_meta(model_id, meta, crash_step="record-write")

    def _finish_commit(self, model_id: str) -> bool:
        """Roll a decided commit forward: rename its verified `.partial` files into place
        and record them. Idempotent; the caller holds the model's folder lock. True when
        there was a commit to finish."""
        with self._id_locks[model_id]:
            meta = self._read_meta(model_id)
            pending = meta.get("pending")
            if not pending:
                return False
            folder = self.model_dir(model_id)
            self._write_meta(model_id, commits.rolled_forward(folder, meta), crash_step="metadata-write")
            commits.drop_resume_files(folder, pending)
            return True

    # ---- models registered by path ---------------------------------------------------

    def register_path(self, model_id: str, path: str | Path, kind: str | None = None,
                      fields: dict | None = None, mmproj: str | Path | None = None) -> dict:
        """Register the GGUF file at `path` (or the folder holding one with its projector, or
        the file with the projector `mmproj` names) as model `model_id` where it lies, as
        registered.prepare checks and hashes it; `fields` adds metadata (version, gguf, an
        API's own section). Registering an id that is registered already verifies again and
        replaces it; an id whose files are in the store is refused (409). Returns the view.
        Raises InvalidFile, InvalidId, TransferBusy, ReadOnlyStore."""
        self.check_writable()
        folder = self.model_dir(model_id)  # checks the id before any file is looked at
        found = registered.prepare(path, self.models_dir, kind, mmproj)
        folder.mkdir(parents=True, exist_ok=True)
        lock = _folder_lock(folder, model_id)
        try:
            with self._id_locks[model_id]:
                try:
                    meta = dict(self._read_meta(model_id))
                except ModelNotFound:
                    meta = {"id": model_id, "createdAt": int(time.time() * 1000), "version": ""}
                if meta.get("files") and not registered.is_registered(meta) or meta.get("pending"):
                    raise TransferBusy(f"Model '{model_id}' exists with its files in the store; "
                                       f"delete it first or register under another id")
                meta.update(fields or {})
                meta.update({"kind": found.kind, "files": found.records, "registeredPath": found.path})
                self._write_meta(model_id, meta)
        finally:
            lock.__exit__(None, None, None)
        return self.get(model_id)

    # ---- delete ------------------------------------------------------------------------

    def delete(self, model_id: str) -> None:
        """Remove a model and its files, cancelling a transfer in progress here first. A model
        registered by path has only its metadata here: the user's files stay."""
        self.check_writable()
        folder = self.model_dir(model_id)
        if not (folder / META).exists():
            raise ModelNotFound(model_id)
        adapters = self.adapters_of(model_id)
        if adapters:
            raise ModelInUse(f"Model '{model_id}' is the base of the adapters {', '.join(adapters)}: "
                             f"delete them first")
        cancel = self._cancels.get(model_id)
        if cancel:
            cancel.set()
        # Wait (bounded) for the transfer to let go, so its clean-up cannot race ours.
        with flock(folder, blocking=True, timeout=30):
            with self._id_locks[model_id]:
                shutil.rmtree(folder, ignore_errors=True)
                self._cache.pop(model_id, None)

    def adapters_of(self, model_id: str) -> list[str]:
        """The ids of the adapters (fine-tuning's) whose base is `model_id`."""
        return [e.meta["id"] for e in self._entries(ADAPTER_KIND, None)
                if (e.meta.get("adapter") or {}).get("base") == model_id]

    def copy(self, source: str, destination: str) -> dict:
        """A second id for a model's files, without copying a byte: the new folder holds
        hard links, so deleting either id leaves the other whole. The new folder is built
        under a hidden name and renamed, so the copy appears complete or not at all."""
        self.check_writable()
        check_id(destination)
        meta = dict(self._read_meta(source))
        if not_ready_reason(self._models, source, meta) is not None:
            raise InvalidFile(f"Model '{source}' has no complete file to copy yet")
        # A registered model's files are the user's: the copy is a second registration.
        links = [] if registered.is_registered(meta) else list(meta.get("files", {}).values())
        target = self.model_dir(destination)
        with self._id_locks[destination]:
            if target.exists():
                raise TransferBusy(f"Model '{destination}' exists; delete it first")
            staging = Path(tempfile.mkdtemp(prefix=f".copy-{destination}-", dir=self.models_dir))
            try:
                for record in links:
                    os.link(self.model_dir(source) / record["name"], staging / record["name"])
                meta.update({"id": destination, "createdAt": int(time.time() * 1000)})
                atomic_write(staging / META, json.dumps(meta, indent=1).encode())
                os.rename(staging, target)
                fsync_dir(self.models_dir)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return self.get(destination)

    # ---- transfers ---------------------------------------------------------------------

    @contextmanager
    def transfer(self, model_id: str) -> Iterator["Transfer"]:
        """Exclusive right to write a model's files, in this process or any other.

        Leaving the block without `commit()` removes what was written.
        """
        self.check_writable()
        meta = self._read_meta(model_id)
        folder = self.model_dir(model_id)
        lock = _folder_lock(folder, model_id)
        meta = self._read_meta(model_id)  # as it is now that no registration can run
        if registered.is_registered(meta):
            lock.__exit__(None, None, None)
            raise TransferBusy(f"Model '{model_id}' is registered by path ({meta['registeredPath']}): "
                               f"its files are not in the store; register the new file, or delete "
                               f"the model first")
        cancel = threading.Event()
        with self._guard:
            self._cancels[model_id] = cancel
        transfer = Transfer(self, model_id, meta["kind"], files_for(meta["kind"]), cancel)
        try:
            # A commit that a crash interrupted is finished before anything new is written.
            self._finish_commit(model_id)
            for path in tmp_files(folder / META, abandoned_only=True):
                path.unlink(missing_ok=True)
            yield transfer
        finally:
            transfer.discard()
            with self._guard:
                if self._cancels.get(model_id) is cancel:
                    del self._cancels[model_id]
            lock.__exit__(None, None, None)

    def recover(self) -> list[str]:
        """Finish commits a crash interrupted, and remove the partial and temporary files
        it left behind, and the records of pulls and creates it cut short (PROVISIONAL).
        Returns what was removed.

        Only for a writable store with no transfer running: it takes each model's lock.
        """
        if self.read_only:
            return []
        return commits.recover(self.models_dir, self._finish_commit)

    def check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyStore(
                "This store is read-only: the model is managed by its Model resource. "
                "Change the Model with kubectl instead."
            )
