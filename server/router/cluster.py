"""What the router knows of the cluster: the Models, their ready pods and the FineTunes whose
adapters they serve, kept from watch events (kube.py feeds them), and each Model's balancer.
Pure state; the event loop owns it."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from modelyard.server.router.balancer import Balancer
from modelyard.server.shared import names
from modelyard.server.shared.facts import DEFAULT_PORT

Key = tuple[str, str]  # (namespace, name)


def parse_selector(text: str | None) -> dict[str, str]:
    """`a=b,c=d` (the Model's status.selector, as the scale subresource reads it)."""
    out: dict[str, str] = {}
    for term in (text or "").split(","):
        k, sep, v = term.strip().partition("=")
        if sep and k:
            out[k.strip()] = v.strip().lstrip("=")  # `==` is an equality too
    return out


def pod_endpoint(pod: dict[str, Any]) -> str | None:
    """`ip:port` of a running, ready pod; None otherwise."""
    status = pod.get("status") or {}
    ip = status.get("podIP")
    if not ip or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return None
    if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []):
        return None
    port = DEFAULT_PORT
    for container in (pod.get("spec") or {}).get("containers") or []:
        for p in container.get("ports") or []:
            if p.get("name") == "http" and p.get("containerPort"):
                port = p["containerPort"]
    host = f"[{ip}]" if ":" in ip else ip
    return f"{host}:{port}"


def wants_scale_from_zero(model: dict[str, Any]) -> bool:
    """A Model at zero replicas (or without a count yet and allowed to sit at zero), which a
    request wakes. One that has pods on the way is only waited for: setting 1 would scale it down."""
    spec = model.get("spec") or {}
    auto = spec.get("autoscaling") or {}
    replicas = spec.get("replicas")
    return replicas == 0 or (replicas is None and auto.get("minReplicas") == 0)


@dataclass
class Pod:
    namespace: str
    labels: dict[str, str]
    endpoint: str | None


@dataclass
class Entry:
    """A Model and what the router does with it."""

    model: dict[str, Any]
    balancer: Balancer = field(default_factory=Balancer)
    # The Model's generation when this router scaled it from zero: one scale call per wake-up,
    # not one per held request (the watch brings the new replicas a moment later).
    woken: int | None = None

    def claim_wake(self) -> bool:
        """True once per generation of the Model: the caller scales it then."""
        generation = self.model["metadata"].get("generation", 0)
        if self.woken == generation:
            return False
        self.woken = generation
        return True

    @property
    def name(self) -> str:
        return self.model["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.model["metadata"].get("namespace", "")

    @property
    def adapters(self) -> list[str]:
        """The names of the LoRA adapters its pods serve (spec.adapters)."""
        return [a["name"] for a in (self.model.get("spec") or {}).get("adapters") or []
                if isinstance(a, dict) and isinstance(a.get("name"), str)]

    @property
    def selector(self) -> dict[str, str]:
        return parse_selector((self.model.get("status") or {}).get("selector"))


class Cluster:
    def __init__(self, replication: int, load_factor: float) -> None:
        self.replication = replication
        self.load_factor = load_factor
        self.models: dict[Key, Entry] = {}
        self.pods: dict[Key, Pod] = {}
        self.finetunes: dict[Key, dict[str, Any]] = {}
        self._changed = asyncio.Event()
        self.synced = {"models": False, "pods": False}

    # ---- watch events -------------------------------------------------------------
    def replace(self, kind: str, objects: list[dict[str, Any]], namespace: str | None = None) -> None:
        """A fresh list of one namespace (None: all), at start and after a watch broke: what
        is not in it is gone."""
        known = {"models": self.models, "pods": self.pods, "finetunes": self.finetunes}[kind]
        keep = {_key(o) for o in objects}
        for key in [k for k in known if k not in keep and (namespace is None or k[0] == namespace)]:
            del known[key]
        for obj in objects:
            self.apply(kind, "ADDED", obj, notify=False)
        self.synced[kind] = True
        self._refresh()

    def apply(self, kind: str, event: str, obj: dict[str, Any], notify: bool = True) -> None:
        key = _key(obj)
        if kind == "finetunes":
            if event == "DELETED":
                self.finetunes.pop(key, None)
            else:
                self.finetunes[key] = obj
        elif kind == "models":
            if event == "DELETED":
                self.models.pop(key, None)
            elif key in self.models:
                self.models[key].model = obj
            else:
                self.models[key] = Entry(obj, Balancer(self.replication, self.load_factor))
        elif event == "DELETED":
            self.pods.pop(key, None)
        else:
            meta = obj.get("metadata") or {}
            self.pods[key] = Pod(key[0], meta.get("labels") or {}, pod_endpoint(obj))
        if notify:
            self._refresh()

    def _refresh(self) -> None:
        for entry in self.models.values():
            entry.balancer.set_endpoints(self._endpoints(entry))
        # Wake whoever waits for a pod (held requests), then arm a new event.
        self._changed.set()
        self._changed = asyncio.Event()

    def _endpoints(self, entry: Entry) -> list[str]:
        selector = entry.selector
        if not selector:
            return []
        return [p.endpoint for p in self.pods.values()
                if p.endpoint and p.namespace == entry.namespace and selector.items() <= p.labels.items()]

    # ---- lookups ------------------------------------------------------------------
    async def changed(self) -> None:
        await self._changed.wait()

    def find(self, requested: str) -> Entry | None:
        """The Model a request names: its id, or its Ollama name (`tiny:latest` is `tiny`), or
        the name of one of its adapters (its `spec.adapters`, or a FineTune's `status.adapter`
        on it as `spec.baseModel`: its pods serve the adapter on the base). With several
        namespaces watched, the first namespace in order wins."""
        wanted = {requested, names.to_id(requested), requested.lower(), names.to_id(requested).lower()}
        keys = sorted(self.models)
        for key in keys:
            if key[1] in wanted:
                return self.models[key]
        for key in keys:
            if wanted & set(self.models[key].adapters):
                return self.models[key]
        for (namespace, _), finetune in sorted(self.finetunes.items()):
            adapter = (finetune.get("status") or {}).get("adapter")
            base = (finetune.get("spec") or {}).get("baseModel")
            if adapter in wanted and (namespace, base) in self.models:
                return self.models[(namespace, base)]
        return None

    def entries(self) -> list[Entry]:
        return [self.models[k] for k in sorted(self.models)]


def _key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta["name"]
