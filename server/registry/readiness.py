"""Whether a model in the store is ready to use, and what the API shows of it.

A model is ready only when its metadata says every file its kind needs was committed, and each
of those files is on disk with the size that was verified. A model registered by path
(registered.py) is ready only while each of its files stats as it did when it was verified
(inode, mtime, size); otherwise the view says why not.
"""
from __future__ import annotations

import os

from modelyard.server.registry import registered


def files_for(kind: str) -> dict[str, str]:
    """The files a kind needs, by role."""
    if kind == "onnx":
        return {"model": "model.onnx"}
    if kind == "vlm":
        return {"model": "model.gguf", "mmproj": "mmproj.gguf"}
    return {"model": "model.gguf"}


def public_view(meta: dict, ready: bool, reason: str | None = None) -> dict:
    """What the API shows of a model (the mModelStore API's Model object). A model registered
    by path adds `registeredPath`, and `notReadyReason` while it is not ready."""
    out = {"id": meta["id"], "version": meta.get("version", ""), "kind": meta["kind"]}
    out["readyToUse"] = ready
    if meta.get("registeredPath"):
        out["registeredPath"] = meta["registeredPath"]
        if not ready and reason:
            out["notReadyReason"] = reason
    if meta.get("totalSize") is not None:
        out["totalSize"] = meta["totalSize"]
    out["createdAt"] = meta["createdAt"]
    for section in ("gguf", "onnx", "adapter"):
        if meta.get(section) is not None:
            out[section] = meta[section]
    main = meta.get("files", {}).get("model")
    if ready and main:
        out["sha256"] = main["sha256"]
    return out


def external_key(meta: dict) -> tuple:
    """The stats of a registered model's files (in the store's folder, nothing: ())."""
    if not meta.get("registeredPath"):
        return ()
    return tuple(registered.stat_key(r["path"]) for r in meta.get("files", {}).values() if r.get("path"))


def not_ready_reason(models: str, model_id: str, meta: dict) -> str | None:
    """None when every file the kind needs was committed and is on disk at its verified size
    (a registered file: with the stat it was verified with); else why not. `models` is the
    store's folder of model folders."""
    committed = meta.get("files", {})
    for role, name in files_for(meta["kind"]).items():
        record = committed.get(role)
        if record and record.get("path"):
            problem = registered.change_problem(role, record, registered.stat_key(record["path"]))
            if problem:
                return problem
            continue
        if not record or record.get("name") != name:
            return f"no committed {role} file"
        try:
            if os.stat(os.path.join(models, model_id, name)).st_size != record["size"]:
                return f"the {role} file is not at its verified size"
        except FileNotFoundError:
            return f"the {role} file is missing"
    return None
