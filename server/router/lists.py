"""The list routes for the whole cluster, from the Models' status, each in its API's shape.

Where a pod's own formatter can be reused without loading engines it is (OpenAI's model
entry, Silicon's, the registry's public view); Ollama's entry needs a GGUF header the router
does not read, so its `details` carry only what the Model says.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from modelyard.server.api.mullama.catalogue import alias
from modelyard.server.api.openai.format import model_entry as openai_entry
from modelyard.server.api.silicon.engine import model_entry as silicon_entry
from modelyard.server.registry.store import public_view
from modelyard.server.router.cluster import Entry
from modelyard.server.shared import names

GGUF_KINDS = ("llm", "vlm", "embed")


def _created_ms(model: dict[str, Any]) -> int | None:
    stamp = model["metadata"].get("creationTimestamp")
    if not stamp:
        return None
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def _iso(ms: int | None) -> str:
    return datetime.fromtimestamp((ms or 0) / 1000, timezone.utc).isoformat().replace("+00:00", "Z")


def downloaded(entry: Entry) -> bool:
    """Its file is in the cache: a pod can serve it now, or once scaled up."""
    status = entry.model.get("status") or {}
    if status.get("phase") in ("Loading", "Ready"):
        return True
    return any(c.get("type") == "Downloaded" and c.get("status") == "True" for c in status.get("conditions") or [])


def running(entry: Entry) -> bool:
    return bool(entry.balancer.loads)


def _meta(entry: Entry) -> dict[str, Any]:
    """The Model as a registry record (the fields public_view reads)."""
    spec, status = entry.model.get("spec") or {}, entry.model.get("status") or {}
    meta: dict[str, Any] = {"id": entry.name, "version": spec.get("version", ""), "kind": spec.get("kind", "llm"),
                            "createdAt": _created_ms(entry.model)}
    size = (status.get("download") or {}).get("totalSize")
    if size is not None:
        meta["totalSize"] = size
    for section in ("gguf", "onnx"):
        if spec.get(section) is not None:
            meta[section] = spec[section]
    if spec.get("sha256"):
        meta["files"] = {"model": {"sha256": spec["sha256"]}}
    return meta


def store_models(entries: list[Entry], kind: str | None, ready: bool | None) -> dict:
    data = []
    for entry in entries:
        view = public_view(_meta(entry), downloaded(entry))
        if (kind is None or view["kind"] == kind) and (ready is None or view["readyToUse"] == ready):
            data.append(view)
    return {"data": data}


def openai_models(entries: list[Entry]) -> dict:
    return {"object": "list", "data": [openai_entry(e.name, _created_ms(e.model)) for e in entries if downloaded(e)]}


def _ollama_entry(entry: Entry) -> dict:
    meta = _meta(entry)
    name = names.to_name(entry.name)
    return {"name": name, "model": name, "modified_at": _iso(meta["createdAt"]), "size": meta.get("totalSize") or 0,
            "digest": (entry.model.get("spec") or {}).get("sha256", ""),
            "details": {"parent_model": "", "format": "gguf", "family": "", "families": None,
                        "parameter_size": "", "quantization_level": ""}}


def ollama_tags(entries: list[Entry]) -> dict:
    return {"models": [_ollama_entry(e) for e in entries if downloaded(e) and _meta(e)["kind"] in GGUF_KINDS]}


def ollama_ps(entries: list[Entry]) -> dict:
    models, procs = [], []
    for e in entries:
        if not running(e) or _meta(e)["kind"] not in GGUF_KINDS:
            continue
        entry = _ollama_entry(e)
        ctx = ((e.model.get("spec") or {}).get("gguf") or {}).get("initContextSize") or 0
        entry.update({"expires_at": "2318-01-01T00:00:00Z", "size_vram": 0, "context_length": ctx})
        models.append(entry)
        procs.append({"name": entry["name"], "status": "running", "pid": None})
    return {"models": models, "running": procs}


def silicon_models(entries: list[Entry]) -> list[dict]:
    out = []
    for e in entries:
        view = public_view(_meta(e), downloaded(e))
        if view["kind"] != "onnx":
            out.append(silicon_entry(view, {}, None, running(e)))
    return out


def mullama_models(entries: list[Entry]) -> dict:
    """Mullama's /api/models entries; the path and parameter count are the pods' to know."""
    out = []
    for e in entries:
        meta = _meta(e)
        if not downloaded(e) or meta["kind"] not in GGUF_KINDS:
            continue
        gguf = meta.get("gguf") or {}
        out.append({"alias": alias(e.name), "path": None, "parameters": None,
                    "context_size": gguf.get("initContextSize"), "gpu_layers": int(gguf.get("initGpuLayerSize") or 0),
                    "is_default": False, "active_requests": e.balancer.total, "loaded": running(e),
                    "kind": meta["kind"]})
    return {"models": out}


# (family, route) of each list route the declarations mark `lists_models` -> its renderer:
# (the Models, the request's query parameters) -> the body.
RENDERERS = {
    ("openai", "/models"): lambda entries, q: openai_models(entries),
    ("ollama", "/api/tags"): lambda entries, q: ollama_tags(entries),
    ("ollama", "/api/ps"): lambda entries, q: ollama_ps(entries),
    ("registry", "/models"): lambda entries, q: store_models(entries, q.get("kind"), _bool(q.get("ready"))),
    ("silicon", "/models"): lambda entries, q: silicon_models(entries),
    ("mullama", "/api/models"): lambda entries, q: mullama_models(entries),
}


def _bool(text: str | None) -> bool | None:
    return None if text is None else text.lower() in ("1", "true", "yes")
