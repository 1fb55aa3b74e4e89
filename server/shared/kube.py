"""A small dict-in, dict-out Kubernetes API client on top of the `kubernetes` package, for the
operator and the cluster router alike (neither imports the other).

The `kubernetes` package loads the configuration (KUBECONFIG, in-cluster token and CA)
and signs the requests. Its typed API classes are left aside on purpose: the builders
return plain dicts that are sent as they are, and answers stay plain dicts. That
avoids converting hundreds of objects to and from pydantic models.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import quote

import kubernetes

from modelyard.server.shared.facts import GROUP, VERSION

# plural -> (group, version); "" is the core group. What the router reads; the operator's
# client adds what it manages (operator/kube.py).
RESOURCES: dict[str, tuple[str, str]] = {
    "models": (GROUP, VERSION),
    "finetunes": (GROUP, VERSION),
    "pods": ("", "v1"),
}
_DISCOVERY_SECONDS = 60.0  # how long an answer of discovery is trusted
_TIMEOUT = (5, 30)  # connect, read (seconds): a hung API call must not hang a worker
_SLOW = 2.0  # seconds; slower calls are logged, as a sign of an overloaded API server

logger = logging.getLogger(__name__)


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def load_api_client() -> kubernetes.client.ApiClient:
    """The in-cluster configuration in a pod, else KUBECONFIG (or ~/.kube/config)."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


class Kube:
    # The resources this client knows (plural -> group, version); a subclass widens it.
    resources: dict[str, tuple[str, str]] = RESOURCES

    def __init__(self, api_client: kubernetes.client.ApiClient) -> None:
        self.api = api_client
        self._served: dict[str, tuple[float, bool]] = {}  # resource -> (when asked, served)

    def served(self, resource: str) -> bool:
        """Whether the API server serves `resource` at its group and version (a CRD that may
        not be installed), from discovery, asked at most once a minute per resource."""
        asked, answer = self._served.get(resource, (0.0, False))
        if time.monotonic() - asked < _DISCOVERY_SECONDS:
            return answer
        group, version = self.resources[resource]
        try:
            found = self.request("GET", f"/apis/{group}/{version}" if group else f"/api/{version}")
            answer = any(r.get("name") == resource for r in (found or {}).get("resources") or [])
        except KubeError as e:
            if e.status not in (403, 404, 503):  # absent (or its aggregated API down): not served
                raise
            answer = False
        self._served[resource] = (time.monotonic(), answer)
        return answer

    @classmethod
    def path(cls, resource: str, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        group, version = cls.resources[resource]
        parts = [f"/apis/{group}/{version}" if group else f"/api/{version}"]
        if namespace:
            parts.append(f"namespaces/{quote(namespace)}")
        parts.append(resource)
        if name:
            parts.append(quote(name))
        if sub:
            parts.append(sub)
        return "/".join(parts)

    def request(self, method: str, path: str, *, body: Any = None, query: list[tuple[str, Any]] | None = None,
                content_type: str = "application/json", accept: str = "application/json") -> Any:
        headers = {"Accept": accept, "Content-Type": content_type}
        serialized = self.api.param_serialize(
            method, path, query_params=query or [], header_params=headers, body=body,
            auth_settings=["BearerToken"],
        )
        started = time.monotonic()
        response = self.api.call_api(*serialized, _request_timeout=_TIMEOUT)
        data = response.read()
        elapsed = time.monotonic() - started
        if elapsed > _SLOW:
            logger.warning("Slow API call: %s %s took %.1f s", method, path, elapsed)
        if response.status >= 400:
            try:
                message = json.loads(data).get("message") or response.reason
            except (ValueError, AttributeError):
                message = data.decode(errors="replace")[:500]
            raise KubeError(response.status, str(message))
        text = data.decode(errors="replace")
        if accept != "application/json":
            return text
        return json.loads(text) if text else None

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", self.path(resource, namespace, name))
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def list(self, resource: str, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        result = self.request("GET", self.path(resource, namespace), query=[("labelSelector", selector)])
        items = (result or {}).get("items") or []
        # The selector again, client-side: an API server that ignores it must not make
        # the operator delete or read another Model's objects.
        return [
            item for item in items
            if all(((item.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in labels.items())
        ]

    def create(self, resource: str, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The created object, or None when it already exists (a restart re-creating is fine)."""
        try:
            return self.request("POST", self.path(resource, namespace), body=body)
        except KubeError as e:
            if e.status == 409:
                return None
            raise

    def patch(self, resource: str, namespace: str, name: str, body: Any, *, status: bool = False,
              sub: str | None = None) -> Any:
        """A list is a JSON patch; a dict is a JSON merge patch. `sub`: a subresource (scale)."""
        content_type = "application/json-patch+json" if isinstance(body, list) else "application/merge-patch+json"
        path = self.path(resource, namespace, name, "status" if status else sub)
        return self.request("PATCH", path, body=body, content_type=content_type)

    def delete(self, resource: str, namespace: str, name: str) -> None:
        # Foreground: the Job object stays until its pods are gone, so the next download
        # does not start while the previous one still writes into the cache.
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Foreground"}
        try:
            self.request("DELETE", self.path(resource, namespace, name), body=body)
        except KubeError as e:
            if e.status != 404:
                raise

    def pod_log(self, namespace: str, pod: str, container: str, tail_lines: int) -> str:
        path = self.path("pods", namespace, pod, "log")
        query = [("container", container), ("tailLines", tail_lines)]
        return self.request("GET", path, query=query, accept="*/*")  # logs are text/plain
