"""The router's Kubernetes I/O: a watch of the Models, one of their server pods and one of the
FineTunes (whose adapters the base Models' pods serve), each in a thread that feeds the event
loop, and the scale patch that wakes a Model at zero replicas.

The pods come from a watch (as the Inference Extension's endpoint picker reads them), not from
EndpointSlices (the API server refuses loopback addresses there) and not from a lookup per
request.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import kubernetes

from modelyard.server.shared.facts import GROUP, LABEL_COMPONENT, LABEL_MANAGED_BY, MANAGED_BY, VERSION
from modelyard.server.shared.kube import Kube, KubeError, load_api_client

log = logging.getLogger(__name__)

# Every Model's server pods (the operator labels them so); each Model's status.selector then
# picks its own among them.
POD_SELECTOR = f"{LABEL_COMPONENT}=server,{LABEL_MANAGED_BY}={MANAGED_BY}"
_WATCH_SECONDS = 300  # the API server ends a watch after this; the thread watches again
_RETRY_SECONDS = 1.0
KINDS = ("models", "pods", "finetunes")
# Kinds a cluster may not serve (the FineTune CRD not installed, or an older chart's RBAC
# without it): looked for again this often, without a warning each time.
OPTIONAL = {"finetunes"}
_ABSENT_RETRY_SECONDS = 60.0

# (kind, event or "LIST", object or list of objects, the watched namespace or None for all)
Sink = Callable[[str, str, Any, "str | None"], None]


class Watcher:
    """Watch threads (models, pods, finetunes) of one namespace (None: all) that hand each event to
    `sink` on the event loop."""

    def __init__(self, namespace: str | None, loop: asyncio.AbstractEventLoop, sink: Sink,
                 api_client: kubernetes.client.ApiClient | None = None) -> None:
        self.namespace = namespace or None
        self.loop = loop
        self.sink = sink
        self.api_client = api_client or load_api_client()
        self.kube = Kube(self.api_client)
        self._stop = threading.Event()
        self._watches: list[kubernetes.watch.Watch] = []

    def start(self) -> None:
        for kind in KINDS:
            threading.Thread(target=self._run, args=(kind,), name=f"watch-{kind}-{self.namespace or 'all'}",
                             daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        for w in list(self._watches):
            w.stop()

    def _run(self, kind: str) -> None:
        while not self._stop.is_set():
            try:
                version = self._list(kind)
                self._watch(kind, version)
            except KubeError as exc:
                if self._stop.is_set():
                    return
                if kind in OPTIONAL and exc.status in (403, 404):
                    log.info("no %s to watch (%s); looking again in %g s", kind, exc, _ABSENT_RETRY_SECONDS)
                    self._stop.wait(_ABSENT_RETRY_SECONDS)
                    continue
                log.warning("listing %s failed (%s); listing again", kind, exc)
                self._stop.wait(_RETRY_SECONDS)
            except Exception as exc:  # the API server restarted, a 410 Gone, a dropped connection
                if self._stop.is_set():
                    return
                log.warning("watch of %s broke (%s); listing again", kind, exc)
                self._stop.wait(_RETRY_SECONDS)

    def _list(self, kind: str) -> str | None:
        query = [("labelSelector", POD_SELECTOR)] if kind == "pods" else []
        result = self.kube.request("GET", self.kube.path(kind, self.namespace), query=query) or {}
        self.loop.call_soon_threadsafe(self.sink, kind, "LIST", result.get("items") or [], self.namespace)
        return (result.get("metadata") or {}).get("resourceVersion")

    def _watch(self, kind: str, version: str | None) -> None:
        w = kubernetes.watch.Watch()
        self._watches.append(w)
        kwargs: dict[str, Any] = {"timeout_seconds": _WATCH_SECONDS, "_request_timeout": (5, _WATCH_SECONDS + 30)}
        if version:
            kwargs["resource_version"] = version
        if kind == "pods":
            core = kubernetes.client.CoreV1Api(self.api_client)
            func, args = ((core.list_namespaced_pod, (self.namespace,)) if self.namespace
                          else (core.list_pod_for_all_namespaces, ()))
            kwargs["label_selector"] = POD_SELECTOR
        else:
            custom = kubernetes.client.CustomObjectsApi(self.api_client)
            func, args = ((custom.list_namespaced_custom_object, (GROUP, VERSION, self.namespace, kind))
                          if self.namespace else (custom.list_cluster_custom_object, (GROUP, VERSION, kind)))
        try:
            for event in w.stream(func, *args, **kwargs):
                if self._stop.is_set():
                    return
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    self.loop.call_soon_threadsafe(self.sink, kind, event["type"], event["raw_object"], self.namespace)
                elif event["type"] == "ERROR":
                    raise RuntimeError(f"watch error: {event['raw_object']}")
        finally:
            self._watches.remove(w)

    def scale_to_one(self, namespace: str, name: str) -> None:
        """spec.replicas 1 through the Model's scale subresource (blocking: call in a thread)."""
        path = self.kube.path("models", namespace, name, "scale")
        self.kube.request("PATCH", path, body={"spec": {"replicas": 1}}, content_type="application/merge-patch+json")


__all__ = ["Watcher", "KubeError", "POD_SELECTOR", "load_api_client"]
