"""The autoscaler's I/O: read the load of a Model's ready pods, decide, write the replicas.

The decision is autoscaling.py's. Replicas go through the Model's scale subresource
(`models/scale`), the same door `kubectl scale`, an HPA and the router use; the
reconciler then patches the Deployment as for any spec.replicas change. Models without
spec.autoscaling are never touched here.
"""
from __future__ import annotations

import logging
from typing import Any

import httpx

from . import builders
from .autoscaling import Autoscaler, Settings, in_flight
from .kube import Kube
from .reconcile import Context
from .settings import SERVER_PORT
from .validation import spec_problems

logger = logging.getLogger(__name__)
_SCRAPE_TIMEOUT = 2.0  # seconds: a pod that does not answer /metrics in this counts as unread


def autoscale_model(ctx: Context, autoscaler: Autoscaler, model: dict[str, Any], now: float) -> None:
    """One tick for one Model: sample its pods, decide, and scale when the decision says so."""
    spec, status = model.get("spec") or {}, model.get("status") or {}
    meta = model["metadata"]
    settings = Settings.from_spec(spec)
    if settings is None or not _downloaded(status) or spec_problems(meta["name"], spec):
        return  # nothing serves before the download, nor with a spec the reconciler refuses
    load, settled = read_load(ctx.kube, model)
    current = int(spec.get("replicas", 1))
    decision = autoscaler.decide(now, load, current, settled, settings)
    if not decision.changed:
        return
    ctx.kube.patch("models", meta["namespace"], meta["name"], {"spec": {"replicas": decision.replicas}}, sub="scale")
    logger.info("Model %s/%s: %s", meta["namespace"], meta["name"], decision.message)
    ctx.post_event(model, "Normal", decision.reason, decision.message)


def read_load(kube: Kube, model: dict[str, Any]) -> tuple[float, bool]:
    """(requests in flight on the ready pods, whether every existing pod is ready and was read)."""
    meta = model["metadata"]
    labels = dict(pair.split("=", 1) for pair in builders.pod_selector(model).split(","))
    pods = [pod for pod in kube.list("pods", meta["namespace"], labels) if not pod["metadata"].get("deletionTimestamp")]
    total, settled = 0.0, True
    with httpx.Client(timeout=_SCRAPE_TIMEOUT) as client:
        for pod in pods:
            ip = (pod.get("status") or {}).get("podIP")
            if not ip or not _ready(pod):
                settled = False
                continue
            try:
                response = client.get(f"http://{_host(ip)}:{SERVER_PORT}/metrics")
                response.raise_for_status()
            except httpx.HTTPError as e:
                logger.debug("No load from pod %s: %s", pod["metadata"]["name"], e)
                settled = False
                continue
            total += in_flight(response.text, meta["name"])
    return total, settled


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _downloaded(status: dict[str, Any]) -> bool:
    return any(c.get("type") == "Downloaded" and c.get("status") == "True" for c in status.get("conditions") or [])


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip

