"""Kubernetes Events about a Model, as `kubectl describe model` shows them."""
from __future__ import annotations

from typing import Any

from .. import names


def build_event(model: dict[str, Any], event_type: str, reason: str, message: str, now: str) -> dict[str, Any]:
    meta = model["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": model.get("apiVersion", names.API_VERSION),
            "kind": model.get("kind", names.KIND),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "type": event_type,
        "reason": reason,
        # The API server refuses messages above 1 KiB.
        "message": message[:1000],
        "source": {"component": names.MANAGED_BY},
        "reportingComponent": f"{names.GROUP}/operator",
        "reportingInstance": names.MANAGED_BY,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
