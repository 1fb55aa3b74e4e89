"""The Models of the cluster as the list routes show them: each Model resource (its spec and
status) and the router's view of its pods, as the families' `ClusterModel`. Each family's
declaration renders its own list (api/<family>/family.py, `Route.lists_models`)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from modelyard.server.api.family import ClusterModel
from modelyard.server.router.cluster import Entry


def _created_ms(model: dict[str, Any]) -> int | None:
    stamp = model["metadata"].get("creationTimestamp")
    if not stamp:
        return None
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def downloaded(entry: Entry) -> bool:
    """Its file is in the cache: a pod can serve it now, or once scaled up."""
    status = entry.model.get("status") or {}
    if status.get("phase") in ("Loading", "Ready"):
        return True
    return any(c.get("type") == "Downloaded" and c.get("status") == "True" for c in status.get("conditions") or [])


def view(entry: Entry) -> ClusterModel:
    spec, status = entry.model.get("spec") or {}, entry.model.get("status") or {}
    return ClusterModel(
        name=entry.name, kind=spec.get("kind", "llm"), version=spec.get("version", ""),
        created_ms=_created_ms(entry.model), total_size=(status.get("download") or {}).get("totalSize"),
        sha256=spec.get("sha256") or "", gguf=spec.get("gguf"), onnx=spec.get("onnx"),
        downloaded=downloaded(entry), running=bool(entry.balancer.loads), in_flight=entry.balancer.total)


def views(entries: list[Entry]) -> list[ClusterModel]:
    return [view(e) for e in entries]
