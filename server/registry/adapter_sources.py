"""A Model's `spec.adapters`, put into its store beside the base: each a GGUF LoRA fetched from
Hugging Face or a URL, or a file already in the store's volume, checked against the base and
registered as a model of kind adapter under its name (the `model` a client then names).

`modelyard fetch --adapter ...` (the download Job) calls `sync` after the base is complete.
Adapters it registered earlier that the list no longer names are removed; adapters made
otherwise (a FineTune's, an upload's) are left alone.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelyard.server.registry import fetch, lora
from modelyard.server.registry import store as st
from modelyard.server.registry.diskio import inside
from modelyard.server.shared.facts import ADAPTER_KIND, id_problem

ORIGIN = "spec.adapters"  # recorded in the adapter's metadata: what `sync` may remove


@dataclass(frozen=True)
class Wanted:
    """One adapter of the list: `source` is an hf:// or http(s) URL; or `path`, relative to the
    store's root (the cache volume)."""

    name: str
    source: str | None = None
    path: str | None = None
    revision: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Wanted":
        """From the flag's JSON: {"name", and "source" (with "revision") or "path"}."""
        try:
            fields = json.loads(text)
            wanted = cls(**fields)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"--adapter takes a JSON object with name and source or path: {exc}") from None
        if problem := id_problem(wanted.name):
            raise ValueError(f"--adapter name {problem}")
        if (wanted.source is None) == (wanted.path is None):
            raise ValueError(f"--adapter '{wanted.name}': give exactly one of source or path")
        if wanted.path is not None and (os.path.isabs(wanted.path) or ".." in Path(wanted.path).parts):
            raise ValueError(f"--adapter '{wanted.name}': path is relative to the store and cannot leave it")
        return wanted

    @property
    def identity(self) -> str:
        return f"path:{self.path}" if self.path is not None else f"{self.source}@{self.revision or ''}"


class AdapterFailed(Exception):
    """One adapter of the list could not be made ready; `cause` says why (InvalidFile when it
    does not fit the base, FetchError, ValueError). Its message names the adapter."""

    def __init__(self, name: str, cause: Exception):
        text = str(cause)
        super().__init__(text if text.startswith(f"Adapter '{name}'") else f"Adapter '{name}': {text}")
        self.name, self.cause = name, cause


def sync(store: st.Store, base_id: str, adapters: list[Wanted],
         on_progress: Callable[[dict], None] | None = None) -> list[str]:
    """Every adapter of the list ready in the store, the ones dropped from it removed (only once
    every one is ready); their ids. Raises AdapterFailed, which names the adapter."""
    for wanted in adapters:
        try:
            _one(store, base_id, wanted, on_progress)
        except Exception as exc:  # KeyboardInterrupt passes: the CLI's resume message
            raise AdapterFailed(wanted.name, exc) from exc
    names = {w.name for w in adapters}
    for adapter_id in store.adapters_of(base_id):
        if adapter_id not in names and (store.meta(adapter_id).get("adapter") or {}).get("origin") == ORIGIN:
            store.delete(adapter_id)
    return [w.name for w in adapters]


def _one(store: st.Store, base_id: str, wanted: Wanted, on_progress) -> None:
    sources = None if wanted.path is not None else fetch.plan_sources(
        wanted.source, None, wanted.revision, labels=(f"Adapter '{wanted.name}' source", ""))
    identity = f"path:{wanted.path}" if sources is None else sources["model"].identity
    try:
        current = store.get(wanted.name)
    except st.ModelNotFound:
        current = None
    if current is not None:
        meta = store.meta(wanted.name)
        if current["kind"] != ADAPTER_KIND or (meta.get("adapter") or {}).get("origin") != ORIGIN:
            raise ValueError(f"Model '{wanted.name}' exists in the cache and is not one of this Model's "
                             f"spec.adapters: give the adapter another name")
        if current["readyToUse"] and store.committed_source(wanted.name) == identity \
                and meta["adapter"].get("base") == base_id:
            return  # a re-run of the Job: nothing to do
    base_file = store.file_path(base_id)
    fields = {"id": wanted.name, "kind": ADAPTER_KIND, "is_finetuned": True,
              "adapter": {"base": base_id, "origin": ORIGIN}}

    def report(event: dict) -> None:  # apart from the base's progress, which the operator reads
        if on_progress is not None:
            on_progress({"adapter": {"name": wanted.name, **event}})

    with store.provisional(fields, new={"version": ""}):
        with store.transfer(wanted.name) as transfer:
            if sources is None:
                file = Path(store.root, wanted.path)
                if not file.is_file() or not inside(file.resolve(), store.root.resolve()):
                    raise ValueError(f"Adapter '{wanted.name}': {wanted.path} is not a file in the cache volume")
                shape = lora.check(base_file, file)  # before the commit: a wrong file is never ready
                transfer.place("model", file)
                transfer.commit(sources={"model": identity})
            else:
                fitted: dict = {}
                # checked before the commit, as a file in the volume is: a download that does
                # not fit its base is never ready
                fetch.download_into(transfer, sources, on_progress=report, keep_partial=True,
                                    check=lambda files: fitted.update(lora.check(base_file, files["model"])))
                shape = fitted
        store.update(wanted.name, {"adapter": {**fields["adapter"], **shape}})
